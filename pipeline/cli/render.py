"""What the commands print: tables on standard output, sized for a terminal or for logs."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.nightly.results import Gated


def out() -> Console:
    """Standard output; wide enough for the tables when it is not a terminal (logs, make)."""
    return Console() if sys.stdout.isatty() else Console(width=120)


def evaluation_table(report: dict[str, Any], title: str) -> None:
    """The evaluation report (`pipeline.model.evaluation`), best policy first."""
    table = Table(title=title)
    served = "served_as" in report  # the night's: policies as served, the greedy figure beside
    columns = ["policy", "mean profit", "95% CI", "% of optimal", "units", "changes/ep"]
    if served:
        columns.insert(4, "greedy")
    for col in columns:
        table.add_column(col, justify="right" if col != "policy" else "left")
    rows = sorted(report["policies"].items(), key=lambda kv: -kv[1]["mean_profit"])
    for name, r in rows:
        pct = r["pct_of_optimal"]
        cells = [
            name.removeprefix("models:/"),
            f"{r['mean_profit']:,.1f}",
            f"[{r['ci95'][0]:,.0f}, {r['ci95'][1]:,.0f}]",
            "—" if pct is None else f"{pct:.1f}",
            f"{r['mean_units']:.1f}",
            f"{r['price_changes_per_episode']:.1f}",
        ]
        if served:
            greedy = r.get("greedy_mean_profit")
            cells.insert(4, "—" if greedy is None else f"{greedy:,.1f}")
        table.add_row(*cells)
    out().print(table)
    if served:
        s = report["served_as"]
        out().print(
            f"as served: exploration {s['epsilon']:.0%} (rule {s['control_epsilon']:.0%}), at "
            f"most {s['max_step_levels']} ladder steps a period, margin floor "
            f"{s['margin_floor']:.0%}; greedy: the policy alone",
            soft_wrap=True,
        )


def night(report: dict[str, Any], decision: Gated, title: str) -> None:
    """A completed night: its evaluation table, the gate's verdict and the champion."""
    evaluation_table(report, title)
    verdict = "[bold green]PROMOTED[/]" if decision.moved else "[bold yellow]KEPT[/]"
    # one line each, however long: logs are read with grep
    out().print(f"gate: {verdict} — {escape(decision.reason)}", soft_wrap=True)
    champion = decision.champion_label or (
        f"v{decision.champion}" if decision.champion else "none yet"
    )
    out().print(f"champion: {champion}", soft_wrap=True)


def demand(report: dict[str, Any]) -> None:
    """The per-SKU demand fit of a transactions-only night (its fit report)."""
    fit = report["demand"]
    table = Table(title="fitted demand (transactions only): units ~ NegBin(price^elasticity)")
    cols = ("sku", "days", "units", "elasticity", "95% CI", "pooled", "dispersion", "note")
    for col in cols:
        table.add_column(col, justify="left" if col in ("sku", "note") else "right")
    pooled = {r["sku"]: r for r in report.get("elasticities", {}).get("skus", [])}
    alphas = report.get("dispersion", {}).get("skus", {})
    for row in fit["skus"]:
        if row.get("identifiable"):
            ci = f"[{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
            el = f"{row['elasticity']:.2f}"
            note = "negative, as expected" if row["negative"] else "NOT negative"
        else:
            ci, el, note = "—", "—", row.get("reason") or "not identifiable"
        sku = str(row["sku"])
        pool = f"{pooled[sku]['elasticity']:.2f}" if sku in pooled else "—"
        alpha = f"{alphas[sku]['alpha']:.3f}" if sku in alphas else "—"
        table.add_row(sku, str(row["days"]), f"{row['units']:.0f}", el, ci, pool, alpha, note)
    out().print(table)
    s = fit["summary"]
    out().print(
        f"{s['negative']} of {s['identifiable']} identifiable elasticities are negative "
        f"({s['significantly_negative']} significantly); simulator price sensitivity: "
        f"{report['segment']['source']}; each SKU's own, pooled within its category"
    )


def task_grid(title: str, caption: str, tasks: Mapping[str, str]) -> None:
    """An Airflow run's tasks and their states, coloured."""
    grid = Table(title=title, caption=caption)
    grid.add_column("task")
    grid.add_column("state")
    colours = {"success": "green", "failed": "red", "upstream_failed": "yellow"}
    for task, state in tasks.items():
        grid.add_row(escape(task), f"[{colours.get(state, 'dim')}]{state}[/]")
    out().print(grid)


def key_values(title: str, rows: list[tuple[str, str]], header: bool = False) -> None:
    """A two-column table (measure, value)."""
    table = Table(title=title, show_header=header)
    table.add_column("" if not header else "measure", style="" if header else "bold")
    table.add_column("" if not header else "value", justify="right" if header else "left")
    for key, value in rows:
        table.add_row(key, value)
    out().print(table)


def services(title: str, rows: list[tuple[str, str, str]]) -> None:
    """Running services: name, URL, notes."""
    table = Table(title=title)
    for col in ("service", "URL", "notes"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    out().print(table)


def replay(figures: dict[str, Any]) -> None:
    """Control vs treatment over the replay, and the overall uplift."""
    table = Table(title="replay: control (rule) vs treatment (champion), overall")
    for column in (
        "arm",
        "visitors",
        "units",
        "profit / visitor [95% CI]",
        "conversion",
        "margin",
        "explored",
    ):
        table.add_column(column, justify="right" if column != "arm" else "left")
    overall = figures["overall"]
    for arm in ("control", "treatment"):
        a = overall[arm]
        if not a.get("visitors"):
            table.add_row(arm, "0", "", "", "", "", "")
            continue
        lo, hi = a["profit_per_visitor_ci95"]
        margin = "" if a["margin"] is None else f"{a['margin']:.1%}"
        table.add_row(
            arm,
            f"{a['visitors']:,}",
            f"{a['units']:,}",
            f"{a['profit_per_visitor']:.3f} [{lo:.3f}, {hi:.3f}]",
            f"{a['conversion']:.2%}",
            margin,
            f"{a['exploration_rate']:.1%}",
        )
    out().print(table)
    for key, what in (("effect", "profit"), ("conversion_effect", "conversion")):
        e = figures.get(key)
        if e:
            ci = f"[{e['ci95'][0]:+.1%}, {e['ci95'][1]:+.1%}]" if e["ci95"] else "[no interval]"
            out().print(
                f"treatment {what} per visitor vs control: {e['effect']:+.1%} "
                f"{ci} ({figures['design']} design: 95 % CI over "
                f"{e['units']['treatment']:,} + {e['units']['control']:,} units of analysis, "
                f"each a {e['unit']})"
            )


def doctor(findings: list[dict[str, Any]], title: str) -> None:
    """`pricing doctor`: each check, what it found, and what --repair does (or did)."""
    table = Table(title=title)
    for col in ("check", "status", "found", "repair"):
        table.add_column(col)
    for f in findings:
        status = "ok" if f["ok"] else ("repaired" if f["repaired"] else "PROBLEM")
        table.add_row(f["check"], status, escape(f["detail"]), escape(f["repair"] or "—"))
    out().print(table)


def parity(f: dict[str, Any]) -> None:
    """`pricing parity`: each policy served vs evaluated, and the champion/rule ratio each way."""
    n = f["sku_seasons"]
    table = Table(title=f"{f['world']}: served vs evaluated, {n} SKU-seasons (paired)")
    for col in ("policy", "served", "evaluated as served", "served / evaluated", "greedy"):
        table.add_column(col, justify="right" if col != "policy" else "left")
    for name, p in f["policies"].items():
        who = f"v{f['champion']['version']} {name}" if name == "champion" else name
        table.add_row(
            who,
            f"{p['served']:,.1f}",
            f"{p['evaluated_as_served']:,.1f}",
            f"{p['served_over_evaluated']:.3f}",
            f"{p['evaluated_greedy']:,.1f}",
        )
    out().print(table)
    r = f["ratio"]
    t = r["evaluate_table"]
    lo, hi = f["gap_ci95"]
    out().print(
        f"champion / rule: served {r['served']:.3f}, evaluated as served "
        f"{r['evaluated_as_served']:.3f} — gap {f['gap_points']:+.2f} points, 95 % CI "
        f"[{lo:+.2f}, {hi:+.2f}]; {'AGREE' if f['agree'] else 'DISAGREE'} within "
        f"±{f['tolerance_points']:g} points"
    )
    out().print(
        f"the table's figure (greedy, `pricing evaluate`, {t['episodes']} episodes): "
        f"{t['ratio']:.3f} [{t['ci95'][0]:.3f}, {t['ci95'][1]:.3f}]; greedy on the served "
        f"seasons: {r['evaluated_greedy_same_seasons']:.3f}"
    )
