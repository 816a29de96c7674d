"""The Gradio page: tabs for text -> image / video / audio, search by example, composed queries, index facts."""
from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

from ..modality import AUDIO_EXTS, IMAGE_EXTS, VIDEO_EXTS, Modality
from .handlers import DemoBackend, SearchResult, gallery_items, hits_html, players_html, status_markdown

__all__ = ["TABS", "DEMO_CSS", "build_demo"]

#: Tab names, in page order. ``build_demo(tabs=...)`` picks a subset (the per-task apps use one or two).
TABS = ("text-image", "text-video", "text-audio", "example", "composed", "index")

_TAB_TITLES = {
    "text-image": "Text → image",
    "text-video": "Text → video",
    "text-audio": "Text → audio",
    "example": "Search by example",
    "composed": "Composed",
    "index": "Index",
}

DEMO_CSS = """
.mmr-players { display: flex; flex-wrap: wrap; gap: 12px; }
.mmr-card { margin: 0; padding: 8px; border: 1px solid var(--border-color-primary); border-radius: 8px; width: 300px; }
.mmr-card video { width: 100%; max-height: 220px; background: #000; }
.mmr-card audio { width: 100%; }
.mmr-card figcaption { font-size: 0.9em; margin-top: 4px; }
.mmr-window { color: var(--body-text-color-subdued); }
table.mmr-hits { width: 100%; border-collapse: collapse; font-size: 0.92em; }
table.mmr-hits td, table.mmr-hits th { padding: 2px 8px; text-align: left; border-bottom: 1px solid var(--border-color-primary); }
"""

_MEDIA_CHOICES = ["image", "video", "audio", "text"]


def _upload_types() -> list[str]:
    return sorted(set(IMAGE_EXTS) | set(VIDEO_EXTS) | set(AUDIO_EXTS))


def build_demo(
    retriever: Any,
    *,
    tabs: Sequence[str] | None = None,
    title: str = "mmretrieve — multimodal search",
    note: str | None = None,
    examples: Mapping[str, Sequence[str]] | Sequence[str] = (),
    max_upload_bytes: int | None = 50 * 1024**2,
    default_k: int = 10,
    inversion: Any = None,
) -> Any:
    """A ``gr.Blocks`` page over ``retriever`` (not launched; see :func:`mmretrieve.demo.launch`).

    ``tabs`` is a subset of :data:`TABS` (default: all). ``note`` is shown under the index facts (e.g.
    "built from the sample corpus"). ``examples`` are text queries offered under the text tabs: one list
    for all, or a mapping from result modality ("image", "video", "audio") to its own list. ``inversion``:
    the network behind the Composed tab's inversion method (a path; default: the one shipped for the preset).
    """
    import gradio as gr

    chosen = tuple(TABS if tabs is None else tabs)
    unknown = [t for t in chosen if t not in TABS]
    if unknown or not chosen:
        raise ValueError(f"tabs={list(chosen)!r}: choose from {', '.join(TABS)}")
    backend = DemoBackend(retriever, max_upload_bytes=max_upload_bytes, note=note, inversion=inversion)
    kwargs: dict[str, Any] = {"title": title, "analytics_enabled": False}
    if "css" in inspect.signature(gr.Blocks.__init__).parameters:  # Gradio 5; Gradio 6 takes css in launch()
        kwargs["css"] = DEMO_CSS

    def k_slider(tab: str):
        return gr.Slider(1, 50, value=default_k, step=1, label="k (results)", elem_id=f"{tab}-k")

    def modality_filter(tab: str):
        return gr.CheckboxGroup(
            _MEDIA_CHOICES, value=["image", "video", "audio"], label="Result modalities (none ticked = any)", elem_id=f"{tab}-modality"
        )

    def outputs(tab: str, kinds: Sequence[str]) -> list:
        status = gr.Markdown(elem_id=f"{tab}-status")
        made = [status]
        for kind in kinds:
            if kind == "image":
                made.append(gr.Gallery(label="Images", columns=5, height="auto", object_fit="contain", elem_id=f"{tab}-gallery"))
            elif kind in ("video", "audio"):
                made.append(gr.HTML(elem_id=f"{tab}-{kind}s"))
        with gr.Accordion("All results (ranked)", open=True):
            made.append(gr.HTML(elem_id=f"{tab}-hits"))
        return made

    def render(result: SearchResult, kinds: Sequence[str]) -> list:
        values: list = [status_markdown(result)]
        for kind in kinds:
            if kind == "image":
                values.append(gallery_items(result.hits))
            else:
                values.append(players_html(result.hits, Modality(kind)))
        values.append(hits_html(result.hits) if result.ok else "")
        return values

    with gr.Blocks(**kwargs) as demo:
        gr.Markdown(f"# {title}")
        stats_top = gr.Markdown(backend.stats_markdown(), elem_id="mmr-stats")
        with gr.Tabs():
            for tab in chosen:
                with gr.Tab(_TAB_TITLES[tab], id=tab, elem_id=f"tab-{tab}"):
                    if tab.startswith("text-"):
                        kind = tab.split("-", 1)[1]
                        with gr.Row():
                            query = gr.Textbox(label=f"Describe the {kind} you want", scale=4, elem_id=f"{tab}-query")
                            k = k_slider(tab)
                        button = gr.Button("Search", variant="primary", elem_id=f"{tab}-search")
                        offered = list(examples.get(kind, ()) if isinstance(examples, Mapping) else examples)
                        if offered:
                            gr.Examples([[e] for e in offered], inputs=[query], label="Try", cache_examples=False)
                        outs = outputs(tab, [kind])

                        def on_text(text, k_value, _kind=kind):
                            return render(backend.text_search(text, _kind, k_value), [_kind])

                        for trigger in (button.click, query.submit):
                            trigger(on_text, inputs=[query, k], outputs=outs)
                    elif tab == "example":
                        gr.Markdown("Upload an image, a video clip or a sound; results can be of any modality.")
                        with gr.Row():
                            upload = gr.File(label="Example file", file_types=_upload_types(), type="filepath", elem_id="example-upload")
                            with gr.Column():
                                mods = modality_filter(tab)
                                k = k_slider(tab)
                        button = gr.Button("Search", variant="primary", elem_id="example-search")
                        kinds = ["image", "video", "audio"]
                        outs = outputs(tab, kinds)

                        def on_example(file, mod_values, k_value, _kinds=kinds):
                            return render(backend.example_search(file, mod_values, k_value), _kinds)

                        button.click(on_example, inputs=[upload, mods, k], outputs=outs)
                    elif tab == "composed":
                        gr.Markdown(
                            "A reference image (or clip) plus the change you want in words. "
                            "Arithmetic mixes the two vectors (the slider is the text's share: 0 = only the reference, "
                            "1 = only the words); inversion turns the reference into pseudo words of a prompt for the "
                            "text tower (“in blue a *”) and ignores the slider. Inversion is preselected when a network "
                            "is at hand (the sample model ships one)."
                        )
                        with gr.Row():
                            upload = gr.File(label="Reference image or clip", file_types=_upload_types(), type="filepath", elem_id="composed-upload")
                            with gr.Column():
                                text = gr.Textbox(label="Change (e.g. “in blue”, “moving left”)", elem_id="composed-text")
                                method = gr.Radio(["arithmetic", "inversion"], value=backend.default_composed_method(), label="Method",
                                                  elem_id="composed-method")
                                weight = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Text weight (arithmetic)",
                                                   elem_id="composed-weight")
                        with gr.Row():
                            mods = modality_filter(tab)
                            k = k_slider(tab)
                        button = gr.Button("Search", variant="primary", elem_id="composed-search")
                        kinds = ["image", "video", "audio"]
                        outs = outputs(tab, kinds)

                        def on_composed(file, words, w, how, mod_values, k_value, _kinds=kinds):
                            return render(backend.composed_search(file, words, w, mod_values, k_value, how), _kinds)

                        for trigger in (button.click, text.submit):
                            trigger(on_composed, inputs=[upload, text, weight, method, mods, k], outputs=outs)
                    else:  # index
                        stats = gr.Markdown(backend.stats_markdown(), elem_id="index-stats")
                        details = gr.JSON(value=_jsonable(backend.stats()), label="retriever.info()", elem_id="index-info")
                        refresh = gr.Button("Refresh", elem_id="index-refresh")

                        def on_refresh():
                            return backend.stats_markdown(), _jsonable(backend.stats()), backend.stats_markdown()

                        refresh.click(on_refresh, outputs=[stats, details, stats_top])
    demo.mmr_backend = backend  # the launcher and the tests reach the handlers through it
    return demo


def _jsonable(info: dict) -> dict:
    return {k: (v if isinstance(v, (str, int, float, bool, list, dict, type(None))) else str(v)) for k, v in info.items()}
