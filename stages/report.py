"""Stage report: the run on one self-contained page -> reports/index.html (samples, reconstructions,
training curves, metrics with their protocols, data summary, params)."""
from stages._common import run, start


def main():
    params = start()
    from pipeline.report import build_report
    out = build_report(params)
    print(f"report: {out} ({out.stat().st_size / 1e3:.0f} kB, self-contained)")


if __name__ == "__main__":
    run("report", main)
