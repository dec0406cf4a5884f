#!/usr/bin/env python3
"""Draws docs/benchmarks/chart.svg from the JSON lines that `scoreboard bench … --record FILE` appends.

Each figure is drawn as a bar of how far it is from its goal (issue "Stream speed"): 1.0 is the goal met exactly;
for "higher is better" figures the bar is value / goal, for latencies and memory goal / value. The latest record of
each (benchmark, name) wins. Usage: scripts/bench-chart.py docs/benchmarks/results.jsonl > docs/benchmarks/chart.svg
"""
import json
import sys
from xml.sax.saxutils import escape

# name (as the bench prints it) -> (kind, goal). kind "ratio": value / baseline ≥ goal; "min": value ≥ goal;
# "max": value ≤ goal.
GOALS = {
    ("worker", "worker events/s"): ("min", 100_000),
    ("ingest", "batch ingest, 1000-item batches"): ("min", 200_000),
    ("ingest", "player flow (token + score)"): ("ratio", 0.5),
    ("ingest", "player p99 at 5000/s (open loop)"): ("max", 10),
    ("latency", "202 → SSE update p50"): ("max", 10),
    ("latency", "202 → SSE update p99"): ("max", 50),
    ("queries", "top"): ("ratio", 0.8),
    ("queries", "around"): ("ratio", 0.8),
    ("queries", "standing"): ("ratio", 0.8),
    ("fanout", "20000 subscribers: memory each"): ("max", 10_000 / 1024),
    ("fanout", "20000 subscribers: update to all p99"): ("max", 250),
    ("fanout", "10000 subscribers: memory each"): ("max", 10_000 / 1024),
    ("fanout", "10000 subscribers: update to all p99"): ("max", 250),
}


def main(path):
    latest = {}
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if line:
                record = json.loads(line)
                latest[(record["benchmark"], record["line"]["name"].strip())] = record
    rows = []
    for key, (kind, goal) in GOALS.items():
        record = latest.get(key)
        if record is None:
            continue
        value = record["median"]
        if kind == "ratio":
            baseline = record.get("baselineMedian") or 0
            shown = value / baseline if baseline else 0
            score = shown / goal
            label = f"{value:,.0f} {record['line']['unit']} = {shown:.2f}× baseline (goal ≥ {goal}×)"
        elif kind == "min":
            score = value / goal
            label = f"{value:,.0f} {record['line']['unit']} (goal ≥ {goal:,.0f})"
        else:
            score = goal / value if value > 0 else 10
            label = f"{value:,.1f} {record['line']['unit']} (goal ≤ {goal:,.1f})"
        rows.append((f"{key[0]}: {key[1]}", min(score, 2.0), label, record["date"][:10]))

    width, row_height, left, bar_width = 980, 34, 330, 420
    height = 70 + row_height * len(rows)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="22" font-size="15" font-weight="bold">scoreboard benchmarks: figure ÷ goal (1.0 = goal met; bars capped at 2)</text>']
    goal_x = left + bar_width / 2
    out.append(f'<line x1="{goal_x}" y1="34" x2="{goal_x}" y2="{height - 10}" stroke="#333" stroke-dasharray="4,3"/>')
    out.append(f'<text x="{goal_x + 4}" y="46" fill="#333">goal</text>')
    for index, (name, score, label, date) in enumerate(rows):
        y = 56 + index * row_height
        colour = "#2e7d32" if score >= 1 else "#ef6c00"
        out.append(f'<text x="10" y="{y + 15}">{escape(name)}</text>')
        out.append(f'<rect x="{left}" y="{y + 3}" width="{max(1, score / 2 * bar_width):.1f}" height="18" fill="{colour}"/>')
        out.append(f'<text x="{left + bar_width + 8}" y="{y + 15}">{escape(label)} · {date}</text>')
    out.append('</svg>')
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks/results.jsonl")
