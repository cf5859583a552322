"""Waiting queues: FCFS, or by priority (lower value first, then arrival order)."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class HasRequest(Protocol):
    @property
    def sort_key(self) -> tuple[int, float, int]: ...


T = TypeVar("T", bound=HasRequest)


class WaitingQueue(Generic[T]):
    """FCFS deque, or a heap on (priority, arrival_s, index) when by_priority.

    Preempted requests are pushed back with push_front: first in line under FCFS (as vLLM
    does), and at their own priority under priority scheduling.
    """

    def __init__(self, by_priority: bool) -> None:
        self.by_priority = by_priority
        self._fifo: deque[T] = deque()
        self._heap: list[tuple[tuple[int, float, int], T]] = []

    def __len__(self) -> int:
        return len(self._heap) if self.by_priority else len(self._fifo)

    def push(self, item: T) -> None:
        if self.by_priority:
            heapq.heappush(self._heap, (item.sort_key, item))
        else:
            self._fifo.append(item)

    def push_front(self, item: T) -> None:
        if self.by_priority:
            heapq.heappush(self._heap, (item.sort_key, item))
        else:
            self._fifo.appendleft(item)

    def peek(self) -> T:
        return self._heap[0][1] if self.by_priority else self._fifo[0]

    def pop(self) -> T:
        return heapq.heappop(self._heap)[1] if self.by_priority else self._fifo.popleft()

    def remove(self, item: T) -> bool:
        """Take item out of the queue wherever it is (an abort); False if it is not queued."""
        if self.by_priority:
            for i, (_, queued) in enumerate(self._heap):
                if queued is item:
                    self._heap[i] = self._heap[-1]
                    self._heap.pop()
                    heapq.heapify(self._heap)
                    return True
            return False
        try:
            self._fifo.remove(item)
        except ValueError:
            return False
        return True

    def __iter__(self) -> Iterator[T]:
        """Queued items, in no guaranteed order."""
        return iter([entry[1] for entry in self._heap] if self.by_priority else self._fifo)
