"""Build the ReDial requests that ship with coachrec, linked to MovieLens latest-small.

    python scripts/build_redial_requests.py ../shared/datasets/redial

Reads the ReDial test conversations (CC BY 4.0), links every candidate movie to the bundled
ml-latest-small catalog by its DBpedia name (`coachrec.data.linking`), and writes one JSON line
per recommender turn with at least one linked target not mentioned before: the conversation so far (speaker, text),
the linked movies mentioned before (oldest first), the linked targets not mentioned before
(what the human recommender suggested next: the ground truth), and how many targets were
mentioned before or could not be linked, and the conversation's text keys (what its words ask
for: genres, moods, catalog tags, eras, read by the served intent parser over ml-latest-small,
`coachrec.serve.understanding.text_keys`; the same keys a served request gets from its text).
Output: `src/coachrec/datasets/redial-ml/requests.jsonl.gz` (deterministic: gzip mtime 0), or
the path given second.

    python scripts/build_redial_requests.py --add-keys

(re)writes only the `keys` of the bundled file's records, from their own `context`, every other
field as it is (the bundled turns were linked by an earlier linker: a full rebuild with
today's keeps 2,965 turns, not 2,825).
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

import numpy as np

from coachrec import datasets
from coachrec.data.conversations import load_conversations
from coachrec.data.linking import link_conversations
from coachrec.serve.candidates import as_turns
from coachrec.serve.understanding import IntentParser, text_keys

OUT = Path(__file__).resolve().parents[1] / "src" / "coachrec" / "datasets" / "redial-ml" / "requests.jsonl.gz"


def _write(out: Path, lines: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(("\n".join(lines) + "\n").encode())
    out.write_bytes(buf.getvalue())


def add_keys(path: Path = OUT) -> None:
    """The `keys` of every record of `path` re-read from its `context`; nothing else changes."""
    catalog = datasets.load("ml-latest-small").catalog
    assert catalog is not None
    parser = IntentParser(catalog)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    lines = [
        json.dumps(r | {"keys": text_keys(parser, as_turns(r.get("context") or None))}, ensure_ascii=False)
        for r in records
    ]
    _write(path, lines)
    print(f"keys of {len(records)} records; wrote {path} ({path.stat().st_size:,} bytes)")


def main(folder: str, out: Path = OUT) -> None:
    conv = load_conversations(folder)
    catalog = datasets.load("ml-latest-small").catalog
    assert catalog is not None
    links = link_conversations(conv, catalog, catalog_name="ml-latest-small")
    parser = IntentParser(catalog)
    ids = np.asarray(catalog.items.ids, dtype=object)
    lines, kept, unlinked_targets = [], 0, 0
    for row in conv.turns.iter_rows(named=True):
        turn = int(row["turn"])
        targets = conv.column(np.asarray(row["targets"] or [], dtype=np.int64))
        linked = links.history(targets)
        unlinked_targets += len(targets) - len(linked)
        mentions = links.history(conv.column(np.asarray(row["prev_entity"] or [], dtype=np.int64)))
        new = [i for i in dict.fromkeys(linked.tolist()) if i not in set(mentions.tolist())]
        if not new:
            continue
        context = [{"speaker": speaker, "text": text} for speaker, text in conv.context(turn) if text.strip()]
        lines.append(
            json.dumps(
                {
                    "dialog_id": str(row["dialog_id"]),
                    "turn": turn,
                    "context": context,
                    "mentions": [str(ids[i]) for i in mentions],
                    "targets": [str(ids[i]) for i in new],
                    "mentioned_targets": int(len(set(linked.tolist())) - len(new)),
                    "unlinked_targets": int(len(targets) - len(linked)),
                    "keys": text_keys(parser, as_turns(context or None)),
                },
                ensure_ascii=False,
            )
        )
        kept += 1
    _write(out, lines)
    print(
        f"{kept} of {conv.n_turns} turns kept (a new linked target each); {unlinked_targets} targets unlinked; "
        f"wrote {out} ({out.stat().st_size:,} bytes)"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--add-keys"]:
        add_keys()
        sys.exit(0)
    main(
        sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/redial",
        Path(sys.argv[2]) if len(sys.argv) > 2 else OUT,
    )
