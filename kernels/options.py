"""Scoring given answers: the log-likelihood a local model gives each option of a question.

Generation is the wrong tool for a multiple-choice question on a small model: it may answer
in prose, or not at all. `OptionScorer` instead reads, for each option, the summed
log-probability of its tokens after `"Question: {question}\nAnswer:"` (the lm-evaluation-
harness ARC prompt); the answer is the option with the highest sum. It also scores each
option after a content-free prompt ("Answer:", for PMI normalisation) and the question's own
tokens (how familiar the text is to the model): the signals `runtime.calibration` turns
into a calibrated probability that the answer is right.

Log-probs of *given* tokens need every position's logits, so the scorer loads its own
`Llama(logits_all=True)` (the runtime's engine avoids that cost: ~100 MB for SmolLM2 at a
512-token context). Call it from one thread: llama.cpp's OpenMP pool is per calling thread.

    with OptionScorer("bundled:smollm2-135m") as scorer:
        scores = scorer.score("Which gas do plants take in?", ["oxygen", "carbon dioxide"])
        scores.chosen   # 1
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PROMPT = "Question: {question}\nAnswer:"


@dataclass(frozen=True, slots=True)
class OptionScores:
    """What the local model said about one multiple-choice item (all log-probs in nats).

    `option_logprob[i]` is the summed log-probability of option i's tokens after the
    question; `option_unconditional[i]` the same after a content-free prompt ("Answer:");
    `option_first[i]` the log-probability of its first token only (empty: use the sums).
    """

    option_logprob: tuple[float, ...]
    option_tokens: tuple[int, ...]
    option_chars: tuple[int, ...]
    option_unconditional: tuple[float, ...]
    prompt_mean_logprob: float
    prompt_tokens: int
    option_first: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.option_logprob)
        sizes = (len(self.option_tokens), len(self.option_chars), len(self.option_unconditional))
        if self.option_first and len(self.option_first) != n:
            raise ValueError("OptionScores.option_first must have one value per option")
        if n < 2 or any(s != n for s in sizes):
            raise ValueError("OptionScores needs >= 2 options and equal-length fields")

    @property
    def chosen(self) -> int:
        """The local answer: the option with the highest summed log-likelihood."""
        return int(np.argmax(self.option_logprob))


class OptionScorer:
    """Log-likelihoods of given continuations, from one `Llama(logits_all=True)`."""

    def __init__(
        self, model: str, threads: int, context_length: int = 512, prompt: str = PROMPT
    ) -> None:
        from llama_cpp import Llama

        from kernels.common import default_threads
        from kernels.llama_log import route_llama_logs
        from kernels.registry import resolve

        route_llama_logs()
        resolved = resolve(model)
        self.model_id = resolved.id
        self.prompt = prompt
        self._llm = Llama(
            model_path=str(resolved.path), n_ctx=context_length, logits_all=True,
            n_threads=threads or default_threads(), n_threads_batch=threads or default_threads(),
            verbose=False,
        )
        self._null = self._tokens("Answer:")
        self.truncated = 0  # questions cut from the left to fit the context

    def _tokens(self, text: str) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False))

    def _logprobs(self, rows: np.ndarray, targets: list[int]) -> np.ndarray:
        x = rows.astype(np.float64)
        peak = x.max(axis=1, keepdims=True)
        lse = peak[:, 0] + np.log(np.exp(x - peak).sum(axis=1))
        out: np.ndarray = x[np.arange(len(targets)), targets] - lse
        return out

    def _continuations(self, context: list[int], options: list[list[int]]) -> list[np.ndarray]:
        """Token log-probs of each option after `context` (the context is evaluated once)."""
        llm = self._llm
        llm.reset()  # type: ignore[no-untyped-call]
        llm.eval(context)
        n = llm.n_tokens
        out = []
        for toks in options:
            llm.n_tokens = n  # rewind to the end of the context: its KV cache is reused
            llm.eval(toks)
            rows = np.asarray(llm.scores[n - 1 : n - 1 + len(toks)])
            out.append(self._logprobs(rows, toks))
        return out

    def context(self, question: str) -> list[int]:
        """The prompt's tokens, with BOS when the model's tokenizer asks for it (Gemma)."""
        text = self.prompt.format(question=question).encode("utf-8")
        return list(self._llm.tokenize(text, add_bos=True))

    def score(self, question: str, options: Sequence[str],
              unconditional: bool = True) -> OptionScores:
        """Score every option (conditional and unconditional) and the question itself.

        `unconditional=False` skips the content-free pass (its sums are then reported as 0).
        """
        if len(options) < 2:
            raise ValueError("a multiple-choice question needs at least 2 options")
        context = self.context(question)
        option_tokens = [self._tokens(f" {o}") or self._tokens(" ") for o in options]
        room = self._llm.n_ctx() - max(len(t) for t in option_tokens)
        if room < 2:
            raise ValueError(f"an option is too long for the scorer's {self._llm.n_ctx()}-token "
                             "context")
        if len(context) > room:
            # A long passage: keep BOS and the end of the question (its "Answer:" cue).
            head = context[:1] if context[0] == self._llm.token_bos() else []
            context = head + context[len(context) - (room - len(head)):]
            self.truncated += 1
        cond = self._continuations(context, option_tokens)
        # the question's own tokens, read from the logits the context eval left behind
        q = np.asarray(self._llm.scores[: len(context) - 1])
        prompt_lp = self._logprobs(q, context[1:]) if len(context) > 1 else np.zeros(1)
        uncond = (
            self._continuations(self._null, option_tokens) if unconditional
            else [np.zeros(1) for _ in option_tokens]
        )
        return OptionScores(
            option_logprob=tuple(float(c.sum()) for c in cond),
            option_tokens=tuple(len(t) for t in option_tokens),
            option_chars=tuple(len(o) + 1 for o in options),
            option_unconditional=tuple(float(u.sum()) for u in uncond),
            prompt_mean_logprob=float(prompt_lp.mean()),
            prompt_tokens=len(context),
            option_first=tuple(float(c[0]) for c in cond),
        )

    def close(self) -> None:
        self._llm.close()

    def __enter__(self) -> OptionScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
