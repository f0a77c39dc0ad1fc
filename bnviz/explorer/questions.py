"""The home page's question index: every question of the product brief, each with one link to the
exact view (and section) of the app that answers it.

A link is a page, its URL parameters and a section anchor (the ``anchor`` of a heading on that
page); ``href`` writes it relative to the app's root, so it works behind a proxy's path prefix.
Each is built from a config of its page (``view``: the page's ``url.py``, the one module of a page
folder the kernel may import), never from hand-written parameters. The tests parse every link with
its page's ``QuerySpec`` (no value refused), check that the view runs, and click every link in
Chromium.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from bnviz.explorer.data_parallel.url import DATA_PARALLEL, DataParallelConfig
from bnviz.explorer.doctor.url import DOCTOR, DoctorConfig
from bnviz.explorer.layer.url import LAYER, Config
from bnviz.explorer.query import QuerySpec

Query = tuple[tuple[str, str], ...]

WHAT_BATCH_NORM_DOES = (
    "**Batch norm** takes a batch of activations and, channel by channel, subtracts the batch's mean and divides by "
    "its standard deviation — so every channel comes out centred at 0 with a spread of 1 — then multiplies by γ and "
    "adds β, two numbers per channel that the network learns."
)
INDEX_HEADING = "**Questions people ask about batch norm** — each link opens the view of this app that answers it:"


@dataclass(frozen=True)
class Link:
    """One view of the app: ``page`` ("" is the layer explorer at ``/``), its URL parameters, and
    the anchor of the section to scroll to ("" for the top)."""

    page: str
    query: Query = ()
    section: str = ""

    @property
    def href(self) -> str:
        """``./page?query#section``, relative to the app's root."""
        text = "./" + self.page
        if self.query:
            text += "?" + urlencode(self.query)
        return text + ("#" + self.section if self.section else "")


def view(page: str, spec: QuerySpec, config: Any, section: str = "") -> Link:
    """A link to ``config`` on ``page`` (its ``spec``): the parameters where it differs from the
    page's defaults (a short link; the rest are the defaults anyway)."""
    base = type(config)()
    query = tuple((k, v) for k, v in spec.to_query(config).items() if v != spec.format_value(k, base))
    return Link(page, query, section)


def layer(section: str = "", **fields: Any) -> Link:
    """A view of the layer explorer (``/``)."""
    return view("", LAYER, Config(**fields), section)


@dataclass(frozen=True)
class Question:
    """A question people ask about batch norm (numbered as in the product brief), the view that
    answers it, what that view shows, and further views for a question with several answers."""

    number: int
    text: str
    link: Link
    shows: str
    more: tuple[tuple[str, Link], ...] = ()


QUESTIONS: tuple[Question, ...] = (
    Question(1, "What is the difference between BatchNorm1d and BatchNorm2d, and why BatchNorm2d after the conv "
                "layers and BatchNorm1d in the classifier?",
             Link("network", section="what-arrives"),
             "a small CNN: the shape that reaches each batch norm, and which values share one statistic there"),
    Question(2, "(N, C, L) or (N, L, C)? BatchNorm1d on a transformer's (batch, length, features) tensor",
             layer(layer="BatchNorm1d", shape=(32, 10, 64), layout="features-last"),
             "torch's error \"running_mean should contain 10 elements not 64\", and the fix beside it"),
    Question(3, "Why do train and eval outputs differ, and why doesn't torch.no_grad() change that?",
             layer("train-and-eval", mode="eval"),
             "one batch through both modes: its own statistics against the running ones"),
    Question(4, "Momentum in torch against Keras and Flax (0.1 against 0.9), and momentum=None",
             layer("running-statistics", momentum=0.01, steps=30),
             "torch's momentum 0.01 (Keras' 0.99) over 30 batches, with the update written out"),
    Question(5, "Why does running_var differ from the variance that normalizes the batch?",
             layer("what-batch-norm-does", layer="BatchNorm1d", shape=(4, 3), steps=0),
             "a batch of 4: the biased variance (÷ n) normalizes, the unbiased one (÷ (n − 1)) is stored"),
    Question(6, "\"Expected more than 1 value per channel when training\": a batch of one",
             layer(layer="BatchNorm1d", shape=(1, 16), steps=0),
             "the error in training, why, and what to do; in eval mode the same batch works"),
    Question(7, "What does track_running_stats=False do in eval mode?",
             layer("train-and-eval", track_running_stats=False, mode="eval"),
             "eval mode normalizing with the batch's own statistics, exactly like train mode"),
    Question(8, "My own batch norm doesn't match torch's: why?",
             layer("what-batch-norm-does", dist="large-mean"),
             "a channel whose mean dwarfs its spread: a one-pass float32 variance against torch's and bnviz's",
             more=(
                 ("Bessel's correction: running_var is unbiased, the normalizing variance is not",
                  layer("what-batch-norm-does", layer="BatchNorm1d", shape=(4, 3), steps=0)),
                 ("eps goes inside the square root (torch 1e-5, Keras 1e-3)",
                  layer("what-batch-norm-does", eps=0.001)),
                 ("momentum's direction: torch's weights the new batch",
                  layer("running-statistics", momentum=0.9, steps=10)),
                 ("float32 cancellation in E[x²] − E[x]² when the mean dwarfs the spread",
                  layer("what-batch-norm-does", dist="large-mean")),
             )),
    Question(9, "How do LayerNorm, GroupNorm, InstanceNorm and RMSNorm differ from BatchNorm, and why does batch "
                "size matter to one of them only?",
             Link("family"),
             "the five members on one tensor: which values share a statistic, and which outputs move with the batch"),
    Question(10, "Batch norm under DistributedDataParallel with small per-device batches, and SyncBatchNorm",
             view("data-parallel", DATA_PARALLEL, DataParallelConfig(world=8, per_rank=2)),
             "8 real processes with 2 samples each: their own statistics against the whole batch's"),
    Question(11, "Can I fold batch norm into the conv before it, and why does my \"frozen\" batch norm still change?",
             Link("inference"),
             "the folded weights with the formula's numbers, and four ways of freezing, of which two hold"),
    Question(12, "Why does batch norm help training at all?",
             Link("training", section="why-it-helps"),
             "Ioffe & Szegedy's Figure 1 run live on digits: accuracy, and a sigmoid's input drifting without it",
             more=(
                 ("Higher learning rates: a sweep over seeds", Link("training", section="higher-learning-rates")),
                 ("A smoother loss, not less internal covariate shift: noisy batch norm",
                  Link("training", section="noisy-batch-norm")),
             )),
    Question(13, "Batch norm before or after the ReLU?",
             Link("training", section="before-or-after-relu"),
             "both orders trained from the same weights over several seeds, and what the difference amounts to"),
    Question(14, "My model is much worse in eval() than in train(): why, and how do I fix it?",
             Link("eval-gap", section="non-iid-batches"),
             "batches sorted by class: fine in train mode, near chance in eval — then each cause, run and fixed",
             more=(
                 ("Running statistics that lag the weights, and exact population statistics",
                  Link("eval-gap", section="lagging-statistics")),
             )),
    Question(15, "Dropout and batch norm together: the variance shift",
             Link("eval-gap", section="dropout"),
             "dropout before each batch norm: the shift measured against Li et al.'s formula, and two fixes"),
    Question(16, "Gradient accumulation, several forward passes per step, activation checkpointing: what does "
                 "batch norm see, and what does it update?",
             Link("eval-gap", section="micro-batches"),
             "k micro-batches of n against one batch of k·n: the statistics' spread and the buffers they leave",
             more=(
                 ("Two forward passes against one concatenated batch", Link("eval-gap", section="two-passes")),
                 ("Activation checkpointing: torch counts each step twice, bnviz once",
                  Link("eval-gap", section="checkpointing")),
             )),
    Question(17, "What does the gradient through batch norm look like?",
             layer("gradients"),
             "the closed-form ∂L/∂x on the chosen tensor against both layers: it sums to zero per channel and is "
             "orthogonal to x̂"),
    Question(18, "Can I see how batch norm treats my own tensor?",
             layer("explorer"),
             "upload a .npy, .pt or .safetensors tensor and the layer explorer runs every section on it"),
    Question(19, "Is something wrong with the batch norms in my model?",
             view("doctor", DOCTOR, DoctorConfig()),
             "bnviz.diagnose on a checkpoint: statistics never updated, NaN buffers, Keras momentum, dead channels — "
             "on samples with planted faults, or your own state dict"),
)  # fmt: skip


def index_html(questions: tuple[Question, ...] = QUESTIONS) -> str:
    """The index as an HTML list (our own strings, escaped): each question a link that opens its
    view in this tab (``target="_self"``), then what the view shows, and a question's further views
    as a nested list. The page renders it with ``st.html``: no Markdown parsing in the browser,
    which drew the front door's first picture 0.4 s later."""

    def anchor(text: str, link: Link) -> str:
        return f'<a href="{html.escape(link.href)}" target="_self">{html.escape(text)}</a>'

    items = []
    for q in questions:
        more = "".join(f"<li>{anchor(text, link)}</li>" for text, link in q.more)
        items.append(
            f"<li>{anchor(q.text, q.link)}<br><small>{html.escape(q.shows)}</small>"
            + (f"<ul>{more}</ul>" if more else "")
            + "</li>"
        )
    return f'<ol class="bnviz-questions">{"".join(items)}</ol>'
