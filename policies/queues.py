"""Waiting queues: arrival order (FCFS), or smallest key first (priority, shortest prompt, ...)."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# Orders the waiting queue, smallest first; keys must be unique (end with a tie-breaker such
# as the workload row) because equal keys would make the heap compare the items themselves.
QueueKey = Callable[[Any], tuple[Any, ...]]


class WaitingQueue(Generic[T]):
    """FCFS deque when key is None, else a heap on key(item), computed when the item is pushed.

    Preempted requests are pushed back with push_front: first in line under FCFS (as vLLM
    does), and at their own key (computed anew) in a keyed queue.
    """

    def __init__(self, key: QueueKey | None = None) -> None:
        self.key = key
        self._fifo: deque[T] = deque()
        self._heap: list[tuple[tuple[Any, ...], T]] = []

    def __len__(self) -> int:
        return len(self._fifo) if self.key is None else len(self._heap)

    def push(self, item: T) -> None:
        if self.key is None:
            self._fifo.append(item)
        else:
            heapq.heappush(self._heap, (self.key(item), item))

    def push_front(self, item: T) -> None:
        if self.key is None:
            self._fifo.appendleft(item)
        else:
            heapq.heappush(self._heap, (self.key(item), item))

    def peek(self) -> T:
        return self._fifo[0] if self.key is None else self._heap[0][1]

    def pop(self) -> T:
        return self._fifo.popleft() if self.key is None else heapq.heappop(self._heap)[1]

    def remove(self, item: T) -> bool:
        """Take item out of the queue wherever it is (an abort); False if it is not queued."""
        if self.key is not None:
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
        return iter([entry[1] for entry in self._heap] if self.key is not None else self._fifo)
