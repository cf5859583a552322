"""What the HTTP side needs of the model: its limits and, when it has one, its tokenizer.

The engine may run in another process (`serve.engine_process`); it sends these facts back as a
plain picklable record, and the HTTP process loads the tokenizer itself from the checkpoint
directory (a tokenizer is small; the model's weights stay in the engine process).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchsim.serve.protocol import ModelLimits

logger = logging.getLogger(__name__)

Detokenize = Callable[[int], str]


@dataclass(frozen=True)
class FrontFacts:
    """The model's facts for request checking and responses (picklable)."""

    name: str
    max_model_len: int
    vocab_size: int
    checkpoint_dir: str | None  # where a tokenizer may be; None: presets and bare configs
    config: dict[str, Any] = field(default_factory=dict)  # what was built (logs, the banner)


def frontend(facts: FrontFacts, name: str | None = None
             ) -> tuple[ModelLimits, Detokenize | None]:
    """The limits requests are checked against and the detokenizer; name: served name."""
    tokenizer = load_tokenizer(facts.checkpoint_dir)
    limits = ModelLimits(
        name=name or facts.name, max_model_len=facts.max_model_len, vocab_size=facts.vocab_size,
        tokenize=(lambda text: list(tokenizer.encode(text))) if tokenizer else None,
        apply_chat=_chat(tokenizer) if tokenizer else None)
    detok = (lambda t: str(tokenizer.decode([t]))) if tokenizer else None
    return limits, detok


def load_tokenizer(checkpoint_dir: str | None) -> Any:
    """The checkpoint's tokenizer, or None (presets and bare configs have none)."""
    if checkpoint_dir is None:
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(checkpoint_dir, local_files_only=True)
    except (OSError, ValueError) as e:
        logger.warning("no tokenizer in %s (%s): token-id prompts only", checkpoint_dir, e)
        return None


def _chat(tokenizer: Any) -> Callable[[list[dict[str, str]]], list[int]]:
    def apply(messages: list[dict[str, str]]) -> list[int]:
        if getattr(tokenizer, "chat_template", None):
            return list(tokenizer.apply_chat_template(messages, tokenize=True,
                                                      add_generation_prompt=True))
        return list(tokenizer.encode("\n".join(m["content"] for m in messages)))

    return apply
