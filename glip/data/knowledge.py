"""Knowledge-augmented class prompts (GLIPKNOW.*), as the reference's knowledge-augmented inference.

A knowledge file (GLIPKNOW.KNOWLEDGE_FILE, yaml or json) maps a class name to its entry, e.g. the reference's
`knowledge/odinw_benchmark35_knowledge_and_gpt3.yaml`::

    Ambulance:
      clean_name: Ambulance
      def_wiki: An emergency vehicle designed for transporting seriously ill or injured people to a hospital.
      def_wn: a vehicle that takes people to and from hospitals
      gpt3: [' A vehicle for transporting sick or injured people ...', ...]
      path_wn: [ambulance, car, motor_vehicle, ...]

With GLIPKNOW.PARALLEL_LANGUAGE_INPUT every class becomes its own text, encoded separately
(`glip.modeling.language.parallel`), and owns exactly one position of the text sequence: class i of the
prompt scores against position i (the classes in the order of their dataset ids). A class's text is
`clean_name`, then, with knowledge:

* GLIPKNOW.WIKI_AND_GPT3: `clean_name + ": " + def_wiki + " ".join(gpt3[:GPT3_NUM])` (the wiki definition and
  the GPT-3 sentences are joined without a separator, as in the reference; each GPT-3 sentence of the
  reference's file starts with a space);
* else GLIPKNOW.KNOWLEDGE_TYPE names one field (e.g. "def_wiki", "def_wn", "gpt3", "path_wn"): when the entry
  has it and it is not empty, `clean_name + ": " + value`, a list value being its first GPT3_NUM items joined
  by spaces.

A class missing from the file, or whose entry cannot be combined (e.g. `def_wiki: null` with WIKI_AND_GPT3),
keeps its plain dataset name (logged), as the reference's fallback does. The names looked up are the
dataset's category names as they are (`categories()`, DATASETS.OVERRIDE_CATEGORY applied), without the
cleaning and caption prompts of ordinary prompts.
"""
import json
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

logger = logging.getLogger(__name__)


def load_knowledge(path: str) -> Dict[str, dict]:
    """The class name -> entry mapping of a knowledge file (yaml, or json by extension)."""
    with open(path, "r") as f:
        knowledge = json.load(f) if str(path).endswith(".json") else yaml.safe_load(f)
    if not isinstance(knowledge, dict):
        raise ValueError("knowledge file {} must map class names to entries, got {}".format(
            path, type(knowledge).__name__))
    return {str(k): v for k, v in knowledge.items()}


def knowledge_text(name: str, knowledge: Dict[str, dict], knowledge_type: str = "", wiki_and_gpt3: bool = False,
                   gpt3_num: int = 5) -> Optional[str]:
    """The text of class `name` (see the module docstring); None when it falls back to the plain name."""
    try:
        entry = knowledge[name]
        text = entry["clean_name"]
        if wiki_and_gpt3:
            text += ": " + entry["def_wiki"] + " ".join(entry["gpt3"][:gpt3_num])
        elif knowledge_type and knowledge_type in entry and entry[knowledge_type]:
            value = entry[knowledge_type]
            if knowledge_type == "gpt3" or isinstance(value, list):
                value = " ".join(value[:gpt3_num])
            text += ": " + value
        return text if isinstance(text, str) else None
    except (KeyError, TypeError, AttributeError):
        return None


def knowledge_texts(names: Sequence[str], knowledge: Dict[str, dict], knowledge_type: str = "",
                    wiki_and_gpt3: bool = False, gpt3_num: int = 5) -> List[str]:
    """One text per class name; plain names where the knowledge does not apply (logged once)."""
    texts, plain = [], []
    for name in names:
        text = knowledge_text(name, knowledge, knowledge_type, wiki_and_gpt3, gpt3_num)
        if text is None:
            plain.append(name)
            text = name
        texts.append(text)
    if plain:
        logger.warning("no usable knowledge for %d of %d classes, their plain names are used: %s", len(plain),
                       len(names), plain)
    return texts


def knowledge_prompts(dataset, cfg) -> Tuple[List[List[str]], List[Dict[int, List[int]]]]:
    """GLIPKNOW.PARALLEL_LANGUAGE_INPUT detection prompts of `dataset`: one prompt holding one text per category
    (sorted by category id) and its map {category id: [position]}; the inference loop's `(queries, maps)`."""
    categories = dataset.categories()
    ids = sorted(categories)
    know = cfg.GLIPKNOW
    knowledge = load_knowledge(know.KNOWLEDGE_FILE) if know.KNOWLEDGE_FILE else {}
    texts = knowledge_texts([categories[i] for i in ids], knowledge, know.KNOWLEDGE_TYPE, know.WIKI_AND_GPT3,
                            know.GPT3_NUM)
    return [texts], [{i: [position] for position, i in enumerate(ids)}]
