"""Real-data loaders and transforms shared by the drift calibration tests (data read by path, never copied)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def banking77(shared: Path, split: str) -> pd.DataFrame:
    """BANKING77 ``train`` / ``test`` as ``text`` + ``intent``."""
    frame = pd.read_csv(shared / "banking77" / f"{split}.csv")
    return frame.rename(columns={"category": "intent"})[["text", "intent"]]


def sst2(shared: Path) -> pd.DataFrame:
    """SST-2 dev sentences (movie-review fragments, lower-cased and tokenised)."""
    return pd.read_csv(shared / "sst2" / "dev.tsv", sep="\t", quoting=3).rename(columns={"sentence": "text"})[["text"]]


def gsm8k(shared: Path) -> pd.DataFrame:
    """GSM8K test questions."""
    return pd.read_json(shared / "gsm8k" / "test.jsonl", lines=True).rename(columns={"question": "text"})[["text"]]


def polite_long(text: str, i: int) -> str:
    """Rewrite a message the way an LLM teacher tends to: a greeting, capitalised and punctuated, and a polite close."""
    opener = ("Hello, I hope you are well.", "Good morning, I hope this message finds you well.", "Dear support team,")[i % 3]
    body = str(text).strip().rstrip(".!?")
    body = body[:1].upper() + body[1:]
    closer = (
        "Could you please help me with this? Thank you very much for your time and kind assistance.",
        "I would really appreciate your help with this matter. Kind regards and many thanks.",
    )[i % 2]
    return f"{opener} {body}. {closer}"


def collapsed_batch(n: int, seed: int = 0) -> list[str]:
    """A mode-collapsed batch: three request templates with slot fills (what a self-instruct loop converges to)."""
    rng = np.random.default_rng(seed)
    templates = (
        "Hello, I would like to know the status of my {thing}. Could you please help me?",
        "Hi, my {thing} has not arrived yet. Can you please check it for me?",
        "Hello, I need help with my {thing}. Could you please assist me?",
    )
    things = ("card", "transfer", "refund", "payment", "top-up", "account", "PIN", "exchange")
    return [templates[int(rng.integers(len(templates)))].format(thing=things[int(rng.integers(len(things)))]) for _ in range(n)]
