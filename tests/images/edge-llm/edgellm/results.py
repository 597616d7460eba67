"""Deterministic stand-in results: each is derived from the SHA-256 of the whole input.

The same input always gives the same result, and any lost, repeated or reordered chunk
of a streamed input gives a different one, so tests can prove that a payload arrived
intact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

WORDS = (
    "hello",
    "meeting",
    "audio",
    "node",
    "gateway",
    "model",
    "stream",
    "speech",
    "today",
    "agenda",
    "team",
    "update",
    "next",
    "review",
    "deploy",
    "check",
)
EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised")


def infer(model: str, payload: str) -> dict:
    """Return the result of `model` (named like `asr-model`) for the concatenated input."""
    digest = hashlib.sha256(payload.encode()).digest()
    kind = model.split("-", 1)[0]
    if kind in RESULTS:
        return RESULTS[kind](digest)
    return {"model": model, "sha256": digest.hex(), "length": len(payload)}


def transcribe(digest: bytes) -> dict:
    """Speech recognition: a short sentence picked by the digest."""
    return {
        "text": " ".join(WORDS[b % len(WORDS)] for b in digest[:6]),
        "confidence": _fraction(digest[6], 0.80, 0.99),
        "language": "zh",
    }


def classify_emotion(digest: bytes) -> dict:
    """Emotion detection: scores per label that sum to 1, the top label wins."""
    weights = [b + 1 for b in digest[: len(EMOTIONS)]]
    total = sum(weights)
    scores = {label: round(w / total, 4) for label, w in zip(EMOTIONS, weights, strict=True)}
    emotion = max(scores, key=scores.__getitem__)
    return {"emotion": emotion, "confidence": scores[emotion], "emotions": scores}


def detect_synthesis(digest: bytes) -> dict:
    """Synthetic-audio detection: a score in [0, 1]; synthetic from 0.5 on."""
    score = _fraction(digest[0], 0.0, 1.0)
    return {
        "is_synthetic": score >= 0.5,
        "confidence": round(max(score, 1 - score), 4),
        "score": score,
    }


def _fraction(byte: int, low: float, high: float) -> float:
    """Map one byte onto [low, high], rounded to 4 places."""
    return round(low + (high - low) * byte / 255, 4)


RESULTS: dict[str, Callable[[bytes], dict]] = {
    "asr": transcribe,
    "emotion": classify_emotion,
    "synthesis": detect_synthesis,
}
