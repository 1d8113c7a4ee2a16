"""Knowledge-graph extraction by the reasoning service's chat model, on top of the rules
(`EDRS_KNOWLEDGE_GRAPH_EXTRACTOR=model`; docs/knowledge.md, "The knowledge graph").

Each passage is sent to reasoning's `Reason` with a JSON Schema the answer is constrained to
(entities with a type, relations with a predicate of the rules' list). The answer is then checked
as untrusted input: a name must be written in the passage (case aside: the passage's own spelling
is kept), a predicate must be one the rules know, a date's year must be written in the passage.
What passes is merged into the rules' extraction with the same normalisation, so the model's
"Acme Corp" and the rules' "ACME Corporation" are one entity. A call that fails leaves its
passage with the rules' reading: the model never fails a document.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import date
from typing import Any
from uuid import UUID

from edrs_core.context import request_context
from edrs_core.errors import ServiceError
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc

from edrs_knowledge.graph import (
    CONCEPT,
    MAX_ALIASES,
    MONTHS,
    ORGANIZATION,
    PERSON,
    PLACE,
    PREDICATES,
    PRODUCT,
    ExtractedEntity,
    ExtractedRelation,
    Extraction,
    is_common_word,
    normalize_name,
    predicate_types,
)

log = logging.getLogger("edrs.knowledge.graph_model")

# What the model may call an entity. A concept is only ever the object of `is_a` (as with the
# rules): a small model otherwise lists every common noun of the passage.
MODEL_ENTITY_TYPES: tuple[str, ...] = (ORGANIZATION, PERSON, PLACE, PRODUCT)
# Bounds of one answer: enough for a dense passage, few enough that a model repeating itself
# stops early (llama.cpp writes the bound into its grammar).
MAX_ENTITIES = 8
MAX_RELATIONS = 8
# A longer "name" is a sentence, not a name.
MAX_NAME_CHARS = 120
# Predicates that read the same both ways: one direction is enough.
SYMMETRIC = frozenset(["partner_of", "merged_with", "competes_with"])

_ROLE_NAMES = {
    "ceo": "CEO",
    "cto": "CTO",
    "cfo": "CFO",
    "coo": "COO",
    "founder": "a founder",
    "president": "the president",
    "chair": "the chair",
    "director": "a director",
    "head": "the head",
}
# What each predicate means, for the prompt (a test checks it covers graph.PREDICATES).
PREDICATE_MEANINGS: dict[str, str] = {
    "acquired": "the subject bought or took over the object",
    "works_at": "the subject (a person) works at or for the object",
    "located_in": "the subject is headquartered, based or located in the object (a place)",
    "founded": "the subject founded the object",
    "owns": "the subject owns the object",
    "subsidiary_of": "the subject is a subsidiary, division or part of the object",
    "partner_of": "the two are partners",
    "merged_with": "the two merged",
    "invested_in": "the subject invested in the object",
    "supplies": "the subject supplies the object",
    "reports_to": "the subject (a person) reports to the object (a person)",
    "leads": "the subject leads, heads, manages or runs the object",
    "competes_with": "the two compete",
    **{
        f"{role}_of": f"the subject (a person) is {title} of the object"
        for role, title in _ROLE_NAMES.items()
    },
    "is_a": 'the subject is a kind of thing the object names in lower case ("logistics company")',
}

SYSTEM_PROMPT = (
    "You read one passage of a document and answer with JSON only: the named things it mentions "
    "and the facts it states between them.\n"
    "entities: every organization, person, place and product the passage names, each name "
    "copied exactly as the passage writes it.\n"
    "relations: every fact the passage states between two names: subject, predicate, object "
    "(names copied from the passage), and valid_from, the date the fact starts (YYYY-MM-DD) when "
    "the passage gives one, else null.\n"
    "Predicates:\n"
    + "\n".join(f"- {p}: {m}" for p, m in PREDICATE_MEANINGS.items())
    + "\nNever invent a name or a fact the passage does not state. Empty lists when it names "
    "nothing."
)


def answer_schema() -> dict[str, Any]:
    """The JSON Schema the model's answer is constrained to. Every property is required, the
    date nullable, for the strict structured-output mode of OpenAI-compatible servers (which has
    no optional properties). No string bounds: llama.cpp spells a maxLength as that many
    repetitions in its grammar (see edrs_task.proposals)."""
    name = {"type": "string"}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["entities", "relations"],
        "properties": {
            "entities": {
                "type": "array",
                "maxItems": MAX_ENTITIES,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "type"],
                    "properties": {"name": name, "type": {"enum": list(MODEL_ENTITY_TYPES)}},
                },
            },
            "relations": {
                "type": "array",
                "maxItems": MAX_RELATIONS,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["subject", "predicate", "object", "valid_from"],
                    "properties": {
                        "subject": name,
                        "predicate": {"enum": list(PREDICATES)},
                        "object": name,
                        "valid_from": {
                            "anyOf": [
                                {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
                                {"type": "null"},
                            ]
                        },
                    },
                },
            },
        },
    }


class UnreadableAnswer(ValueError):
    """The model's answer is not the JSON object the schema describes (a server that does not
    enforce the schema, or an answer cut at max_tokens)."""


@dataclass(frozen=True)
class ModelEntity:
    name: str  # as the passage writes it
    type: str  # one of MODEL_ENTITY_TYPES, CONCEPT for the object of is_a, or "" unknown


@dataclass(frozen=True)
class ModelRelation:
    subject: ModelEntity
    predicate: str
    object: ModelEntity
    valid_from: date | None


@dataclass
class Reading:
    """What the model's answer for one passage holds once checked, and what was dropped."""

    entities: list[ModelEntity] = field(default_factory=list)
    relations: list[ModelRelation] = field(default_factory=list)
    dropped_entities: int = 0
    dropped_relations: int = 0


def find_name(name: str, text: str) -> str | None:
    """`name` as `text` writes it (case and runs of spaces aside), whole words only; None when
    the text does not write it."""
    words = name.split()
    if not words:
        return None
    # (?<!\w) and (?!\w) rather than \b: a name may start or end with punctuation ("Yahoo!").
    pattern = r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)"
    match = re.search(pattern, text, re.IGNORECASE)
    return " ".join(match.group().split()) if match else None


def _key(entity: ModelEntity) -> str:
    return normalize_name(entity.name, company_suffixes=entity.type != CONCEPT)


def _name(value: Any, text: str, type_: str) -> ModelEntity | None:
    """The checked entity a name of the answer stands for, or None (not a string, too long, not
    in the passage, a common word)."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_CHARS:
        return None
    if type_ == CONCEPT:
        # "a logistics company" names the kind "logistics company", as the rules read it.
        value = re.sub(r"^\s*(?:a|an)\s+", "", value, flags=re.IGNORECASE)
    written = find_name(value, text)
    if written is None:
        return None
    entity = ModelEntity(written, type_)
    key = _key(entity)
    if not key or is_common_word(key):
        return None
    return entity


def _valid_from(value: Any, text: str) -> date | None:
    """The relation's start date when the passage writes it: the date itself, or its year and
    (unless it is the first of January) its month's name; the day is kept when the passage
    writes it as a number, else it is the first of the month, as the rules read "June 2024".
    A small model otherwise dates facts at random."""
    if not isinstance(value, str):
        return None
    try:
        when = date.fromisoformat(value)
    except ValueError:
        return None
    if value in text:
        return when

    def written(pattern: str) -> bool:
        return re.search(pattern, text, re.IGNORECASE) is not None

    if not written(rf"(?<!\d){when.year}(?!\d)"):
        return None
    if (when.month, when.day) == (1, 1):
        return when
    if not written(rf"\b{MONTHS[when.month - 1][:3]}"):
        return None
    return when if written(rf"(?<!\d)0?{when.day}(?!\d)") else when.replace(day=1)


def contradicts(predicate: str, subject_type: str, object_type: str) -> bool:
    """Whether known types of a relation's ends rule it out: its object is not of the type the
    predicate names ("X acquired <a person>", "X is located in <an organization>"), or its
    subject is not (a person and an organization may both act: "X acquired Y")."""
    wanted_subject, wanted_object = predicate_types(predicate)
    if wanted_object and object_type and object_type != wanted_object:
        return True
    return bool(
        wanted_subject
        and subject_type
        and subject_type != wanted_subject
        and {subject_type, wanted_subject} != {PERSON, ORGANIZATION}
    )


def read_answer(answer: str, text: str) -> Reading:
    """The model's answer for the passage `text`, checked: names it does not write, unknown
    predicates and relations of a thing with itself are dropped (and counted). Raises
    UnreadableAnswer when the answer is not the schema's object at all."""
    try:
        value = json.loads(answer)
    except json.JSONDecodeError as exc:
        raise UnreadableAnswer(f"not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise UnreadableAnswer(f"a JSON {type(value).__name__}, not an object")
    raw_entities, raw_relations = value.get("entities", []), value.get("relations", [])
    if not isinstance(raw_entities, list) or not isinstance(raw_relations, list):
        raise UnreadableAnswer("entities and relations must be lists")
    reading = Reading()
    types: dict[str, str] = {}  # the type the answer gives each name, by normalised name
    for item in raw_entities[:MAX_ENTITIES]:
        kind = item.get("type") if isinstance(item, dict) else None
        kind = kind if kind in MODEL_ENTITY_TYPES else ""
        entity = _name(item.get("name") if isinstance(item, dict) else None, text, kind)
        if entity is None:
            reading.dropped_entities += 1
            continue
        types.setdefault(_key(entity), kind)
        reading.entities.append(entity)
    reading.dropped_entities += max(0, len(raw_entities) - MAX_ENTITIES)
    for item in raw_relations[:MAX_RELATIONS]:
        if not isinstance(item, dict) or item.get("predicate") not in PREDICATES:
            reading.dropped_relations += 1
            continue
        predicate = str(item["predicate"])
        defaults = predicate_types(predicate)
        ends: list[ModelEntity] = []
        for value, default in (
            (item.get("subject"), defaults[0]),
            (item.get("object"), defaults[1]),
        ):
            if default == CONCEPT:
                entity = _name(value, text, CONCEPT)
            else:
                entity = _name(value, text, "")
                if entity is not None:
                    entity = ModelEntity(entity.name, types.get(_key(entity)) or default)
            if entity is not None:
                ends.append(entity)
        if len(ends) != 2 or _key(ends[0]) == _key(ends[1]):
            reading.dropped_relations += 1
            continue
        reading.relations.append(
            ModelRelation(ends[0], predicate, ends[1], _valid_from(item.get("valid_from"), text))
        )
    reading.dropped_relations += max(0, len(raw_relations) - MAX_RELATIONS)
    return reading


def merge(rules: Extraction, readings: Sequence[Reading | None]) -> tuple[Extraction, int]:
    """The rules' extraction with the model's readings (one per passage, in order, None where
    there is none) added, and how many of the readings' relations were refused: an entity whose
    name normalises to one the rules found (its name or an alias) is that entity, gaining the
    spelling as an alias and a type when it had none; a relation already stated in the passage
    (either way round, for a symmetric predicate) is not added again, nor one whose ends' types,
    as the rules read them, contradict its predicate. The rules' own findings are kept as they
    are. `rules` is not changed."""
    merged = copy.deepcopy(rules)
    # The types the rules gave: the model's own are too unreliable to refuse a relation on.
    rule_types = {e.key: e.type for e in rules.entities.values()}
    owner: dict[str, ExtractedEntity] = {}
    for entity in merged.entities.values():
        for key in sorted(entity.keys | {entity.key}):
            owner.setdefault(key, entity)
    refused = 0

    def resolve(found: ModelEntity) -> str:
        key = _key(found)
        entity = owner.get(key)
        if entity is None:
            entity = ExtractedEntity(key=key, name=found.name, type=found.type, keys={key})
            merged.entities[key] = owner[key] = entity
            return key
        if not entity.type:
            entity.type = found.type
        spellings = {entity.name.casefold(), *(a.casefold() for a in entity.aliases)}
        if found.name.casefold() not in spellings and len(entity.aliases) < MAX_ALIASES:
            entity.aliases = sorted([*entity.aliases, found.name], key=lambda a: (a.casefold(), a))
        return entity.key

    for passage, reading in zip(merged.passages, readings, strict=False):
        if reading is None:
            continue
        for found in reading.entities:
            passage.mentions.add(resolve(found))
        stated = {(r.subject, r.predicate, r.object) for r in passage.relations}
        for r in reading.relations:
            subject, obj = resolve(r.subject), resolve(r.object)
            passage.mentions.update((subject, obj))
            if subject == obj or (subject, r.predicate, obj) in stated:
                continue
            if r.predicate in SYMMETRIC and (obj, r.predicate, subject) in stated:
                continue
            if contradicts(r.predicate, rule_types.get(subject, ""), rule_types.get(obj, "")):
                refused += 1
                continue
            stated.add((subject, r.predicate, obj))
            passage.relations.append(ExtractedRelation(subject, r.predicate, obj, r.valid_from))
    return merged, refused


@dataclass
class ModelCounts:
    """What the model extractor did, for one document or since start."""

    sent: int = 0  # passages sent to the model
    read: int = 0  # ... whose answer was read
    failed: int = 0  # ... whose call failed, timed out or gave an unreadable answer
    skipped: int = 0  # passages beyond the per-document cap: rules only
    entities_dropped: int = 0  # names of the answers not written in their passage
    # relations with such a name, an unknown predicate, one end only, or ends of the wrong type
    relations_dropped: int = 0
    entities_added: int = 0  # entities the rules had not found
    relations_added: int = 0  # relations the rules had not read

    def add(self, other: ModelCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class ModelExtractor:
    """Reads a document's passages with the reasoning service's chat model, `concurrency`
    passages at a time across the service, the first `max_passages` of each document."""

    def __init__(
        self,
        reasoning: reasoning_pb2_grpc.ReasoningServiceAsyncStub,
        *,
        concurrency: int,
        max_passages: int,
        max_tokens: int,
        timeout: float,
    ) -> None:
        self.reasoning = reasoning
        self.max_passages = max_passages
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.totals = ModelCounts()
        self._slots = asyncio.Semaphore(concurrency)
        self._schema = json.dumps(answer_schema())
        self._output_limit: int | None = None  # the reasoning service's max_output_tokens

    async def extend(
        self,
        client_id: str,
        document_id: UUID,
        passages: Sequence[tuple[UUID, str]],
        rules: Extraction,
    ) -> Extraction:
        """`rules` (the extraction of `passages`, each given as (chunk id, text)) with what the
        model reads in them. Never raises (but for cancellation): whatever goes wrong leaves the
        passage, or the document, with the rules' reading, logged with the document id."""
        counts = ModelCounts()
        try:
            sent = passages[: self.max_passages]
            counts.skipped = len(passages) - len(sent)
            # The calls are made for the document's tenant (reasoning keeps a trace per tenant).
            with request_context(client_id, None):
                max_tokens = await self._max_tokens()
                readings: list[Reading | None] = list(
                    await asyncio.gather(
                        *(
                            self._read(document_id, i, chunk_id, text, max_tokens)
                            for i, (chunk_id, text) in enumerate(sent)
                        )
                    )
                )
            counts.sent = len(sent)
            counts.read = sum(r is not None for r in readings)
            counts.failed = counts.sent - counts.read
            counts.entities_dropped = sum(r.dropped_entities for r in readings if r)
            merged, refused = merge(rules, readings)
            counts.relations_dropped = refused + sum(r.dropped_relations for r in readings if r)
        except Exception:
            log.exception("document %s: the model's graph reading failed; rules only", document_id)
            return rules
        counts.entities_added = len(merged.entities) - len(rules.entities)
        counts.relations_added = merged.relation_count - rules.relation_count
        self.totals.add(counts)
        log.info(
            "document %s: the model read %d of %d passages (%d failed, %d over the cap of %d): "
            "%d entities and %d relations added, %d names and %d relations dropped",
            document_id,
            counts.read,
            len(passages),
            counts.failed,
            counts.skipped,
            self.max_passages,
            counts.entities_added,
            counts.relations_added,
            counts.entities_dropped,
            counts.relations_dropped,
        )
        return merged

    async def _max_tokens(self) -> int:
        """The answer's token budget, within what the reasoning service allows (asked once)."""
        if self._output_limit is None:
            try:
                info = await self.reasoning.GetModelInfo(
                    reasoning_pb2.GetModelInfoRequest(), timeout=min(self.timeout, 30.0)
                )
            except ServiceError as exc:
                log.warning("could not read the reasoning service's limits: %s", exc)
                return self.max_tokens
            self._output_limit = info.max_output_tokens or self.max_tokens
        return min(self.max_tokens, self._output_limit)

    async def _read(
        self, document_id: UUID, index: int, chunk_id: UUID, text: str, max_tokens: int
    ) -> Reading | None:
        async with self._slots:
            try:
                answer = await self._ask(document_id, index, chunk_id, text, max_tokens)
                return read_answer(answer, text)
            except (ServiceError, UnreadableAnswer) as exc:
                # The passage text and the answer stay out of the log: they are the tenant's.
                log.warning(
                    "document %s passage %d: no graph reading from the model (%s: %s); rules only",
                    document_id,
                    index,
                    type(exc).__name__,
                    exc,
                )
                return None
            except Exception:
                # Not expected; still never the document's failure.
                log.exception(
                    "document %s passage %d: the model's graph reading failed; rules only",
                    document_id,
                    index,
                )
                return None

    async def _ask(
        self, document_id: UUID, index: int, chunk_id: UUID, text: str, max_tokens: int
    ) -> str:
        call = self.reasoning.Reason(
            reasoning_pb2.ReasonRequest(
                messages=[
                    reasoning_pb2.ChatMessage(role="system", content=SYSTEM_PROMPT),
                    reasoning_pb2.ChatMessage(role="user", content=text),
                ],
                context=[
                    reasoning_pb2.ContextItem(id=str(chunk_id), source="knowledge.chunk", text=text)
                ],
                strategy=reasoning_pb2.STRATEGY_DIRECT,
                options=reasoning_pb2.GenerationOptions(
                    max_tokens=max_tokens, temperature=0.0, json_schema=self._schema
                ),
                labels={
                    "purpose": "graph_extraction",
                    "document_id": str(document_id),
                    "passage": str(index),
                },
            ),
            timeout=self.timeout,
        )
        async for response in call:
            if response.HasField("result"):
                return str(response.result.answer)
        raise UnreadableAnswer("the reasoning service ended the call without a result")
