"""A Stockade plugin in Python: word and line counts of a text.

Build: scripts/build-python-plugin examples/python/wordcount wordcount.wasm
"""

from typing import Annotated, Literal

from stockade_tools import ToolError, error, plugin, tool


@tool(title="Word count", read_only=True, idempotent=True)
def word_count(
    text: Annotated[str, "The text to count"],
    unit: Annotated[Literal["words", "lines", "characters"], "What to count"] = "words",
) -> str:
    """Counts the words (or lines, or characters) in a text."""
    if unit == "lines":
        n = len(text.splitlines())
    elif unit == "characters":
        n = len(text)
    else:
        n = len(text.split())
    return f"{n} {unit}"


@tool(read_only=True)
def longest_word(text: Annotated[str, "The text to look in"]) -> dict:
    """The longest word of a text, and its length."""
    words = text.split()
    if not words:
        raise ToolError("the text has no words; give a text with at least one word")
    word = max(words, key=len)
    return {"word": word, "length": len(word)}


@tool(read_only=True)
def check_min_words(text: str, minimum: Annotated[int, "The least acceptable count"]) -> object:
    """Says whether a text has at least `minimum` words (an error result if not)."""
    n = len(text.split())
    if n < minimum:
        return error(f"only {n} words; at least {minimum} are needed")
    return f"{n} words: enough"


Tools = plugin(name="wordcount", version="0.1.0", description="Counts words, lines and characters")
