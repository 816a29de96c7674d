"""All demos in one page, with tabs: text -> image / video / audio, search by example, composed, index facts.

    python demos/app.py --index media.mmr          # http://127.0.0.1:<free port>/
    python demos/app.py                            # no index: builds one from the synthetic sample corpus

Only the public API is used: ``mmretrieve`` and ``mmretrieve.demo``.
"""
from __future__ import annotations

import argparse
import sys

import mmretrieve
import mmretrieve.demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="mmretrieve: search an index with words, examples or both")
    mmretrieve.demo.add_arguments(parser)
    args = parser.parse_args(argv)

    if args.index is not None:
        try:
            retriever = mmretrieve.Retriever.load(args.index, device=args.device, pretrained=args.pretrained, readonly=True)
        except (mmretrieve.MMRError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        shown = mmretrieve.demo.DemoIndex(retriever)
    else:
        shown = mmretrieve.demo.build_sample_retriever(device=args.device)

    limit = mmretrieve.demo.parse_size(args.max_file_size)  # bytes, for both Gradio and the handlers
    tabs = [t.strip() for t in args.tabs.split(",")] if args.tabs else None
    page = mmretrieve.demo.build_demo(
        shown.retriever, tabs=tabs, note=shown.note, examples=shown.examples, max_upload_bytes=limit
    )
    options = mmretrieve.demo.LaunchOptions(
        host=args.host, port=args.port, share=args.share, max_file_size=limit, open_browser=args.open
    )
    try:
        mmretrieve.demo.launch(page, shown.retriever, options)
    except KeyboardInterrupt:
        pass
    finally:
        shown.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
