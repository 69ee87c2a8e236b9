#!/usr/bin/env python3
"""Renders the panels of config/grafana-dashboard.json to a PNG from a Prometheus server's
query_range API: the same PromQL as the dashboard, over data Prometheus really scraped. (Grafana
itself is not available here; this draws the same queries with matplotlib.)

    python3 scripts/render_dashboard.py --prometheus http://127.0.0.1:9090 --minutes 10 --out docs/dashboard.png
"""
import argparse
import json
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def query_range(base, expr, start, end, step):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{q}") as r:
        return json.load(r)["data"]["result"]


def label(fmt, metric):
    out = fmt
    for k, v in metric.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--prometheus", default="http://127.0.0.1:9090")
    p.add_argument("--dashboard", default="config/grafana-dashboard.json")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    dash = json.load(open(a.dashboard))
    end = time.time()
    start = end - a.minutes * 60
    step = max(1, int(a.minutes * 60 / 300))
    panels = dash["panels"]
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(14, 3.2 * rows))
    for ax, panel in zip(axes.flat, panels):
        for target in panel["targets"]:
            for series in query_range(a.prometheus, target["expr"], start, end, step):
                xs = [(float(t) - start) / 60 for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ax.plot(xs, ys, label=label(target.get("legendFormat", ""), series["metric"]))
        ax.set_title(f'{panel["title"]} [{panel["fieldConfig"]["defaults"]["unit"]}]', fontsize=10)
        ax.set_xlabel("minutes", fontsize=8)
        ax.tick_params(labelsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(
        f'{dash["title"]}: the dashboard\'s queries over a real run, from Prometheus query_range '
        f'({time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(end))})',
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(a.out, dpi=80)


if __name__ == "__main__":
    main()
