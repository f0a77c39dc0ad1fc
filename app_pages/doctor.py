"""``/doctor``: is something wrong with the batch norms in my model? ``bnviz.diagnose`` on a sample
checkpoint bnviz builds itself (healthy, or with one planted fault), or on the visitor's upload —
read in a worker process, within the server's memory budget, and kept nowhere but this session."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app_pages import common
from app_pages.common import chart, load, report_or_reason, view, write_url
from bnviz.diagnosis import CHECKS, by_reason
from bnviz.explorer.doctor import engine
from bnviz.explorer.doctor.engine import DoctorReport
from bnviz.explorer.doctor.figures import statistics_figure
from bnviz.explorer.doctor.url import DOCTOR, MAX_UPLOAD_MB, SAMPLES, DoctorConfig, upload_bytes
from bnviz.explorer.query import inert

INTRO = (
    "Most \"my model is worse in eval()\" problems are visible in the checkpoint itself: running statistics that were "
    "never updated, a NaN in `running_var`, a variance far below eps, dead γ channels, a Keras momentum carried "
    "over, a batch norm left in training mode. bnviz's doctor checks for them. In Python, "
    "`bnviz.diagnose(model, batches)` runs every check; on a file, `python -m bnviz.doctor model.safetensors` runs "
    "those a state dict allows. Here: a sample network bnviz trains itself, or your own state dict."
)
SEVERITY_ICONS = {"error": ":material/error:", "warning": ":material/warning:", "note": ":material/info:"}


def counts(report: dict[str, Any]) -> dict[str, int]:
    out = dict.fromkeys(("error", "warning", "note"), 0)
    for f in report["findings"]:
        out[f["severity"]] += 1
    return out


def badge(report: dict[str, Any]) -> None:
    """The verdict: the count of each severity, red with an error, orange with a warning."""
    n = counts(report)
    words = ", ".join(f"{k} {name}{'s' if k != 1 else ''}" for name, k in n.items())
    with st.container(key="verdict"):
        if n["error"]:
            st.badge(f"needs a fix: {words}", icon=":material/error:", color="red")
        elif n["warning"]:
            st.badge(f"worth a look: {words}", icon=":material/warning:", color="orange")
        else:
            st.badge(f"clean: {words}", icon=":material/check_circle:", color="green")


def draw(report: DoctorReport) -> dict[str, Any]:
    return {"statistics": statistics_figure(report.report)}


def show(report: dict[str, Any], figure: dict[str, Any]) -> None:
    """Findings, the layer table, the picture (``figure``: a sample's from the figures cache, an
    upload's drawn once when it was read), the recalibration and what was not checked. Every
    string that may come from an upload (layer names) is shown in a data grid or a chart with its
    pseudo-HTML escaped: never as Markdown."""
    badge(report)
    st.subheader("Findings", anchor="findings")
    if report["findings"]:
        st.dataframe([{"severity": f["severity"], "check": f["check"], "layer": f["layer"], "finding": f["message"],
                       "fix": f["fix"]} for f in report["findings"]], hide_index=True, key="findings",
                     column_config={"finding": st.column_config.TextColumn(width="large"),
                                    "fix": st.column_config.TextColumn(width="large")})  # fmt: skip
        st.caption("A cell too long to read: widen its column, or hover it.")
        found = sorted({f["check"] for f in report["findings"]}, key=list(CHECKS).index)
        # relative links ("./eval-gap"), as the question index's: they work behind a proxy's path prefix
        st.markdown("Explained in this app: " + " · ".join(f"[{c}](.{CHECKS[c].link})" for c in found))
    else:
        st.caption("No findings.")
    st.subheader("Every batch norm", anchor="layers")
    st.dataframe([_row(r) for r in report["layers"]], hide_index=True, key="layers")
    chart(figure, "chart-statistics")
    recal = report.get("recalibration")
    if recal:
        st.subheader("Recalibrated on the test images", anchor="recalibration")
        st.caption("Each layer's eval-mode input against its running statistics, before and after "
                   "`bnviz.recompute_batch_norm_stats(model, batches, mode=\"exact\")`: the root mean square over "
                   "channels of the mean's shift in running standard deviations (z), and of ln(batch variance / "
                   "running variance). 0 is a perfect match.")  # fmt: skip
        st.dataframe([{"layer": b["layer"], "z before": b["mean_z"], "z after": a["mean_z"],
                       "ln var ratio before": b["log_var_ratio"], "ln var ratio after": a["log_var_ratio"]}
                      for b, a in zip(recal["before"], recal["after"], strict=False)], hide_index=True)  # fmt: skip
    if report["unavailable"]:
        reasons = by_reason(report["unavailable"])
        st.caption("Not checked: " + "; ".join(f"{', '.join(c)} ({w})" for w, c in reasons.items()))


def _row(r: dict[str, Any]) -> dict[str, Any]:
    def q(d: dict[str, Any] | None, key: str) -> float | None:
        return None if d is None else d[key]

    return {"layer": r["name"], "kind": r["kind"], "channels": r["channels"], "momentum": r["momentum"],
            "eps": r["eps"], "tracked": r["num_batches_tracked"],
            "mean min": q(r["running_mean"], "min"), "mean median": q(r["running_mean"], "median"),
            "mean max": q(r["running_mean"], "max"), "var min": q(r["running_var"], "min"),
            "var median": q(r["running_var"], "median"), "var max": q(r["running_var"], "max"),
            "γ min": q(r["weight"], "min"), "γ max": q(r["weight"], "max")}  # fmt: skip


def upload_section() -> None:
    """The visitor's file: read in a worker, diagnosed, and then let go (the uploader is reset, so
    Streamlit drops the bytes); the report stays in this session only."""

    def read(name: str, data: bytes) -> None:
        result = diagnose_upload(name, data)
        figure = None if "refused" in result else statistics_figure(result).to_dict()  # drawn once, not per rerun
        st.session_state["doctor.result"] = (name, len(data), result, figure)

    common.take_upload(
        "doctor", f"Your state dict: .safetensors, or .pt/.pth saved with torch.save(model.state_dict()) — up to "
        f"{MAX_UPLOAD_MB} MB", ["safetensors", "pt", "pth"], MAX_UPLOAD_MB,
        "Read in a separate process with a memory and a time limit: `.pt` through `torch.load(weights_only=True)` "
        "only (a pickle that would run code is refused, and runs nothing), `.safetensors` by bnviz's own reader. "
        "Nothing of the file is kept after this session, or shared with other visitors. A link cannot carry a file: "
        "a link to this page opens the samples.", read)  # fmt: skip
    held = st.session_state.get("doctor.result")
    if held is None:
        return
    name, size, result, figure = held
    st.subheader("Your file", anchor="your-file")
    st.text(f"{name} — {size:,} bytes")
    if st.button("Forget this file's report", key="doctor.forget"):
        del st.session_state["doctor.result"]
        st.rerun()
    if "refused" in result:
        st.error("Refused: " + inert(str(result["refused"]), 400))
        return
    show(result, figure)


def diagnose_upload(name: str, data: bytes) -> dict[str, Any]:
    """``engine.diagnose_upload`` in a worker (``common.upload_in_worker``): the report, or
    ``{"refused": reason}``."""
    status, answer = common.upload_in_worker(engine.diagnose_upload, name, data, upload_bytes(len(data)),
                                             "Reading and checking your file…", engine.UPLOAD_DEADLINE_S)  # fmt: skip
    return answer if status == "ok" else {"refused": answer}


def samples_section(config: DoctorConfig) -> None:
    st.subheader("Sample checkpoints", anchor="samples")
    st.caption("A digits CNN (conv → BN → ReLU twice, linear → BN → ReLU, linear), trained by bnviz in this run, "
               "healthy or with one fault planted. Each is a link.")  # fmt: skip
    st.segmented_control("Sample", list(SAMPLES), key="sample", required=True)
    st.markdown(f"**{config.sample}**: {SAMPLES[config.sample]}.")
    report: DoctorReport | None = report_or_reason(
        config.refusal(), lambda: load(config, engine.run, "Training the sample and checking it…"))  # fmt: skip
    write_url("doctor", DOCTOR.to_query(config))
    if report is None:
        return
    st.caption(f"Eval-mode accuracy of this sample on the 359 test digits: {report.accuracy:.1%}. Checked with "
               "`bnviz.diagnose(model, batches)` — the model and the test images in batches of 64, so every check "
               "runs.")  # fmt: skip
    show(report.report, common.figures(config, (), draw, report)["statistics"])  # a sample's: cached
    if report.file is not None:
        st.download_button("Download this sample's state dict (.safetensors), to try the command line or the upload",
                           report.file, file_name=report.file_name, key="doctor.download")  # fmt: skip
        st.code(f"python -m bnviz.doctor {report.file_name}", language="bash")


def main() -> None:
    st.title("Is something wrong with the batch norms in my model?")
    st.markdown(INTRO)
    config, warnings = view("doctor", DOCTOR, DoctorConfig(), {})
    for w in warnings:
        st.warning(w)
    upload_section()
    samples_section(config)
    with st.expander("Every check: what it needs, its threshold and why"):
        st.dataframe([{"check": c.id, "needs": c.needs, "severity": c.severity, "why": c.reason}
                      for c in CHECKS.values()], hide_index=True)  # fmt: skip


main()
