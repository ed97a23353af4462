"""Scoring given answers: the log-likelihood a local model gives each option of a question.

Generation is the wrong tool for a multiple-choice question on a small model: it may answer
in prose, or not at all. `OptionScorer` instead reads, for each option, the summed
log-probability of its tokens after `"Question: {question}\nAnswer:"` (the lm-evaluation-
harness ARC prompt); the answer is the option with the highest sum. It also scores each
option after a content-free prompt ("Answer:", for PMI normalisation) and the question's own
tokens (how familiar the text is to the model): the signals `runtime.calibration` turns
into a calibrated probability that the answer is right.

Log-probs of *given* tokens need the logits at each of their positions. The scorer loads its
own `Llama`, without `logits_all` (which copies every evaluated position's logits into a
context-sized table: 512 rows of the vocabulary, 0.5 GB for Gemma 3's 262k tokens). It asks
llama.cpp for the rows it needs and turns each into a log-prob at once; a peer that only
rates the options (`familiarity=False`) asks for none of the question's. The tokens are
decoded in the same batches as `Llama.eval`, so the log-probs are those of a
`logits_all=True` scorer to the bit (llama.cpp's kernels depend on the batch size). Measured
with `LocalChooser` on 40 ARC-Easy questions (2 threads, A and B alternated, two runs):
SmolLM2 with the Gemma 3 peer +516 MB resident instead of +707 MB, 0.37–0.45 s per
question instead of 0.53–0.61 (0.69–0.74x); SmolLM2 alone +168 MB instead of +211 MB, in
about the same time. Call it from one thread: llama.cpp's OpenMP pool is per calling
thread.

    with OptionScorer("bundled:smollm2-135m") as scorer:
        scores = scorer.score("Which gas do plants take in?", ["oxygen", "carbon dioxide"])
        scores.chosen   # 1
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kernels.errors import EngineError

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
    dropped_tokens: int = 0  # of the question's start, cut to fit the context (0: none)

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
    """Log-likelihoods of given continuations, from one `Llama` of its own."""

    def __init__(
        self, model: str, threads: int = 0, context_length: int = 512, prompt: str = PROMPT
    ) -> None:
        from llama_cpp import Llama, llama_get_logits_ith

        from kernels.common import default_threads
        from kernels.llama_log import route_llama_logs
        from kernels.registry import resolve

        route_llama_logs()
        resolved = resolve(model)
        self.model_id = resolved.id
        self.prompt = prompt
        try:
            self._llm = Llama(
                model_path=str(resolved.path), n_ctx=context_length, logits_all=False,
                n_threads=threads or default_threads(),
                n_threads_batch=threads or default_threads(), verbose=False,
            )
        except (ValueError, RuntimeError) as exc:  # a corrupt or foreign file, as the engine
            raise EngineError(f"llama.cpp could not load {resolved.path}: {exc}") from exc
        self._null = self._tokens("Answer:")
        self._vocab = self._llm.n_vocab()
        self._logits_ith = llama_get_logits_ith  # read per scored row: bound once
        self.truncated = 0  # questions cut from the left to fit the context

    def _tokens(self, text: str) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False))

    def _row(self, i: int) -> np.ndarray:
        """The logits after the `i`-th token of the last decode (-1: its last token)."""
        ptr = self._logits_ith(self._llm._ctx.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self._vocab,)).astype(np.float64)

    @staticmethod
    def _logprob(row: np.ndarray, target: int) -> float:
        peak = float(row.max())
        return float(row[target] - peak - np.log(np.exp(row - peak).sum()))

    def _extend(self, tokens: list[int], targets: Sequence[int | None] | None
                ) -> tuple[list[float], np.ndarray]:
        """Evaluate `tokens` (one or more) after the cached ones.

        Returns the log-prob of `targets[i]` after `tokens[i]` for each i whose target is
        not None (`targets` as long as `tokens`; None: no row is requested but the last),
        and the logits after the last token. One decode per `n_batch` tokens, as
        `Llama.eval` does.
        """
        if not tokens:
            raise ValueError("nothing to evaluate")
        llm = self._llm
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)  # what a rewind left behind
        out: list[float] = []
        for lo in range(0, len(tokens), llm.n_batch):
            part = tokens[lo : lo + llm.n_batch]
            llm._batch.set_batch(batch=part, n_past=llm.n_tokens, logits_all=targets is not None)
            llm._ctx.decode(llm._batch)
            if targets is not None:
                wanted = targets[lo : lo + len(part)]
                out += [self._logprob(self._row(j), t) for j, t in enumerate(wanted)
                        if t is not None]
            llm.n_tokens += len(part)
        return out, self._row(-1)

    def _continuations(self, context: list[int], options: list[list[int]],
                       with_prompt: bool = False) -> tuple[list[np.ndarray], list[float]]:
        """Token log-probs of each option after `context` (the context is evaluated once,
        its KV cache reused for every option), and with `with_prompt` those of the
        context's own tokens after their predecessors."""
        llm = self._llm
        llm.n_tokens = 0
        prompt, last = self._extend(context, [*context[1:], None] if with_prompt else None)
        n = llm.n_tokens
        out = []
        for toks in options:
            llm.n_tokens = n  # rewind to the end of the context
            # All of the option in one decode, every row requested (the last one unread):
            # the batch the `logits_all` scorer ran, so the same kernels and numbers.
            rest, _ = self._extend(toks, [*toks[1:], None])
            out.append(np.asarray([self._logprob(last, toks[0]), *rest]))
        return out, prompt

    def context(self, question: str) -> list[int]:
        """The prompt's tokens, with BOS when the model's tokenizer asks for it (Gemma)."""
        text = self.prompt.format(question=question).encode("utf-8")
        return list(self._llm.tokenize(text, add_bos=True))

    def score(self, question: str, options: Sequence[str], unconditional: bool = True,
              familiarity: bool = True) -> OptionScores:
        """Score every option (conditional and unconditional) and the question itself.

        `unconditional=False` skips the content-free pass (its sums are then reported as 0);
        `familiarity=False` skips reading the question's own log-probs
        (`prompt_mean_logprob` is then 0).
        """
        if len(options) < 2:
            raise ValueError("a multiple-choice question needs at least 2 options")
        context = self.context(question)
        option_tokens = [self._tokens(f" {o}") or self._tokens(" ") for o in options]
        room = self._llm.n_ctx() - max(len(t) for t in option_tokens)
        if room < 2:
            raise ValueError(f"an option is too long for the scorer's {self._llm.n_ctx()}-token "
                             "context")
        dropped = 0
        if len(context) > room:
            # A long passage: keep BOS and the end of the question (its "Answer:" cue).
            head = context[:1] if context[0] == self._llm.token_bos() else []
            dropped = len(context) - room
            context = head + context[len(context) - (room - len(head)):]
            self.truncated += 1
        # the question's own tokens are read on the way (how familiar the text is)
        cond, prompt = self._continuations(context, option_tokens, with_prompt=familiarity)
        prompt_lp = np.asarray(prompt) if prompt else np.zeros(1)
        uncond = (
            self._continuations(self._null, option_tokens)[0] if unconditional
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
            dropped_tokens=dropped,
        )

    def close(self) -> None:
        self._llm.close()

    def __enter__(self) -> OptionScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
