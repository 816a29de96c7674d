"""mmretrieve search INDEX QUERY: text, example-file, composed or arithmetic queries."""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from ._common import add_device, add_modality, add_pretrained, parse_where


def register(sub) -> None:
    p = sub.add_parser("search", help="search an index with words, an example file, or both (composed)")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("text", nargs="?", default=None, help="query words (with --file: the modification text)")
    p.add_argument("--file", "-f", default=None, help="an example image, clip or sound to search with")
    p.add_argument("--weight", type=float, default=None, help="text share of a composed query (--file + text), 0..1")
    p.add_argument("--method", choices=("arithmetic", "inversion"), default="arithmetic",
                   help="composed query: weighted sum of the two vectors, or textual inversion (the file becomes "
                        "a pseudo word in a prompt; default: %(default)s)")
    p.add_argument("--inversion", metavar="PATH", default=None,
                   help="inversion network (.safetensors, or Pic2Word's .pt); default: the one shipped for the preset")
    p.add_argument("--template", default=None, help="inversion prompt with '*' and '{text}' (default: the network's; Pic2Word's is 'a photo of * , {text}')")
    add_modality(p, "only results of this modality (repeatable)")
    p.add_argument("-k", type=int, default=10, help="number of results (default: %(default)s)")
    p.add_argument("--where", action="append", metavar="KEY=VALUE", help="metadata filter (repeatable)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object per hit, one per line (JSON Lines)")
    out.add_argument("--paths-only", action="store_true", help="print only the hits' file paths, each once, for piping")
    gather = p.add_mutually_exclusive_group()
    gather.add_argument("--copy-to", metavar="DIR", help="copy the hits' files into DIR as NN-name.ext (NN = rank)")
    gather.add_argument("--link-to", metavar="DIR", help="symlink the hits' files into DIR as NN-name.ext")
    p.add_argument("--dedup", type=float, metavar="T", default=None,
                   help="collapse hits more similar than cosine T to a better hit (see `mmretrieve duplicates`)")
    add_pretrained(p)
    add_device(p)
    p.set_defaults(run=run, late_positional="text")


def build_query(text: str | None, file: str | None, weight: float | None, method: str = "arithmetic",
                inversion: str | None = None, template: str | None = None):
    from ..modality import modality_of_path
    from ..query import DEFAULT_COMPOSED_TEXT_WEIGHT, Composed

    if file is None:
        if not text:
            raise ValueError("give query words, --file, or both")
        return text
    if not text:
        return pathlib.Path(file)
    modality = modality_of_path(file)
    if modality is None or modality.value == "text":
        raise ValueError(f"--file {file}: unknown media extension")
    if method == "inversion":
        if weight is not None:
            raise ValueError("--weight applies to --method arithmetic only")
        return Composed(text=text, method="inversion", inversion=inversion, template=template, **{modality.value: file})
    if inversion is not None or template is not None:
        raise ValueError("--inversion and --template apply to --method inversion only")
    w = DEFAULT_COMPOSED_TEXT_WEIGHT if weight is None else weight
    return Composed(text=text, weight=w, **{modality.value: file})


def format_hit(rank: int, hit) -> str:
    where = ""
    if hit.start is not None:
        where = f"  [{hit.start:.1f}s - {hit.end:.1f}s]"
    name = hit.path if hit.path is not None else f"<id {hit.id}> {hit.metadata.get('text', '')}"
    return f"{rank:>3}. {hit.score:.4f}  {hit.modality.value:<5}  {name}{where}"


def run(args: argparse.Namespace) -> int:
    from ..gather import gather_hits, hit_paths
    from ..retriever import Retriever

    if args.method != "arithmetic" and not (args.file and args.text):
        raise ValueError("--method inversion needs both --file (the reference) and the modification text")
    query = build_query(args.text, args.file, args.weight, args.method, args.inversion, args.template)
    extra = {} if args.dedup is None else {"dedup": args.dedup}
    with Retriever.load(args.index, device=args.device, pretrained=args.pretrained, readonly=True) as r:
        hits = r.search(query, modality=args.modality, k=args.k, where=parse_where(args.where), **extra)
    if args.copy_to or args.link_to:
        gathered = gather_hits(hits, args.copy_to or args.link_to, "copy" if args.copy_to else "link")
        print(f"{'copied' if args.copy_to else 'linked'} {len(gathered)} file(s) into {args.copy_to or args.link_to}",
              file=sys.stderr)
    if args.json:
        for rank, h in enumerate(hits, 1):
            print(json.dumps({"rank": rank, "id": h.id, "score": h.score, "path": h.path, "modality": h.modality.value,
                              "start": h.start, "end": h.end, "metadata": h.metadata}, ensure_ascii=False, default=str))
    elif args.paths_only:
        for path in hit_paths(hits):
            print(path)
    elif not hits:
        print("no results")
    else:
        for i, h in enumerate(hits, 1):
            print(format_hit(i, h))
    return 0
