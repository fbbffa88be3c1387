"""Browser check of the three UIs while the demo runs: screenshots a person can look at.

Starts ``hitl-pipeline demo`` on a fresh HITL_HOME, waits until every UI answers and the
loop has promoted a retrained champion (or a deadline passes), then drives the Dagster,
MLflow and Label Studio UIs with Playwright on the system's Chromium (Debian's
``chromium`` package; no browser download) and saves one PNG per page. The demo is
stopped at the end. Run it with ``make ui-check`` (which installs Playwright from the
locked ``ui`` dependency group).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
DAGSTER = "http://127.0.0.1:3000"
MLFLOW = "http://127.0.0.1:5000"


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status < 500
    except OSError:
        return False


def status(env: dict[str, str]) -> dict:
    done = subprocess.run(
        [str(BIN / "hitl-pipeline"), "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return {}


def wait_for_loop(env: dict[str, str], deadline: float) -> float | None:
    """Seconds until a retrained champion replaced the first one, or None at the deadline."""
    started, first = time.monotonic(), None
    while time.monotonic() < deadline:
        champion = status(env).get("champion") or {}
        version = str(champion.get("version") or "") if isinstance(champion, dict) else ""
        print(f"  [{time.monotonic() - started:5.0f} s] champion v{version or '-'}", flush=True)
        if version and first is None:
            first = version
        elif version and version != first:
            return time.monotonic() - started
        time.sleep(30)
    return None


def screenshots(out: Path, credentials: dict[str, str], ls_url: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    pages = [
        ("01-dagster-asset-graph", f"{DAGSTER}/asset-groups"),
        ("02-dagster-runs", f"{DAGSTER}/runs"),
        ("03-dagster-gate-check", f"{DAGSTER}/assets/candidate_model?view=checks"),
        ("04-dagster-loop-metrics", f"{DAGSTER}/assets/loop_metrics"),
        ("05-dagster-automation", f"{DAGSTER}/automation"),
        ("06-mlflow-experiment", f"{MLFLOW}/#/experiments?workflowType=machine_learning"),
        ("07-mlflow-registry", f"{MLFLOW}/#/models/hitl-classifier"),
    ]
    saved: list[Path] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1600, "height": 1000})

        def shoot(name: str) -> None:
            path = out / f"{name}.png"
            page.screenshot(path=str(path))
            saved.append(path)

        for name, url in pages:
            try:
                # the UIs poll their servers, so "network idle" may never come: load, then
                # give the client-side rendering a few seconds
                page.goto(url, wait_until="load", timeout=60_000)
                page.wait_for_timeout(5000)
                skip = page.get_by_role("button", name="Skip")  # Dagster's newsletter dialog
                if skip.count():
                    skip.first.click()
                    page.wait_for_timeout(1000)
                shoot(name)
            except Exception as exc:  # a page that fails is reported; the others still run
                print(f"{name}: {type(exc).__name__}: {exc}".splitlines()[0], flush=True)
        try:
            # Label Studio: log in, open the review project's data manager, then one task
            page.goto(f"{ls_url}/user/login/", wait_until="load")
            page.fill("input[name=email]", credentials["username"])
            page.fill("input[name=password]", credentials["password"])
            page.click("button[type=submit]")
            page.wait_for_timeout(3000)
            page.goto(f"{ls_url}/projects/", wait_until="load")
            page.wait_for_timeout(4000)
            shoot("08-labelstudio-projects")
            page.locator("a[href*='/projects/']").first.click()
            page.wait_for_timeout(6000)
            shoot("09-labelstudio-data-manager")
            page.locator(".dm-table__row-wrapper, [class*='row-wrapper']").first.click()
            page.wait_for_timeout(5000)
            shoot("10-labelstudio-task")
        except Exception as exc:
            print(f"label studio: {type(exc).__name__}: {exc}".splitlines()[0], flush=True)
        browser.close()
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "ui-check")
    parser.add_argument("--minutes", type=float, default=20, help="wait at most this long")
    args = parser.parse_args(argv)
    try:  # before the demo starts, not after 10 minutes of it
        import playwright.sync_api  # noqa: F401
    except ImportError:
        print("playwright is not installed: run `make ui-check` (it installs the ui group)")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="hitl-ui-check-"))
    env = {**os.environ, "HITL_HOME": str(home)}
    log = (args.out / "demo.log").open("w", encoding="utf-8")
    t0 = time.monotonic()
    demo = subprocess.Popen(
        [str(BIN / "hitl-pipeline"), "demo"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: stopped together at the end
    )
    timings: dict[str, float | None] = {}
    try:
        deadline = t0 + args.minutes * 60
        for name, url in (("dagster", DAGSTER), ("mlflow", MLFLOW)):
            while time.monotonic() < deadline and not answers(url):
                time.sleep(2)
            timings[f"{name}_answers_s"] = round(time.monotonic() - t0, 1)
            print(f"{name} UI answers after {timings[f'{name}_answers_s']} s", flush=True)
        credentials_file = home / "labelstudio" / "credentials.json"
        credentials = json.loads(credentials_file.read_text(encoding="utf-8"))
        ls_url = f"http://127.0.0.1:{os.environ.get('HITL_LABEL_STUDIO_PORT', '8080')}"
        waited = wait_for_loop(env, deadline)
        timings["first_retrained_champion_s"] = (
            None if waited is None else round(time.monotonic() - t0, 1)
        )
        print(f"retrained champion after {timings['first_retrained_champion_s']} s", flush=True)
        for path in screenshots(args.out, credentials, ls_url):
            print(f"saved {path}")
        (args.out / "timings.json").write_text(json.dumps(timings, indent=2), encoding="utf-8")
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=120)  # it stops the Dagster and MLflow UIs first
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
        # the demo leaves Label Studio running on purpose (its data stays browsable)
        subprocess.run(
            [str(BIN / "hitl-pipeline"), "labelstudio", "stop"], env=env, stdout=log, timeout=120
        )
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
