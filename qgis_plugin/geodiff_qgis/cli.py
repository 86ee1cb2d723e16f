"""Find and run the geodiff command-line tool, streaming its JSON progress into a QgsProcessingFeedback.

Protocol (``--progress json``, see docs/ARCHITECTURE.md): one JSON object per line on stderr, either
``{"progress": 0.42, "message": "...", "eta_s": 12.3}`` or an event such as
``{"event": "device", "device": "cuda", "dtype": "bfloat16"}``; failures end with a line ``Error: ...`` and a
non-zero exit code.
"""

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from qgis.core import QgsProcessingException

EXECUTABLE_SETTING = "GEODIFF_EXECUTABLE"
MAX_WINDOWS_SETTING = "GEODIFF_MAX_WINDOWS"
DEFAULT_MAX_WINDOWS = 2000  # ~3 h of CPU time at the measured ~5 s per window; minutes on a GPU
DEFAULT_MODEL = "geodiff-default"
_MODELS_CACHE = {}
_VERSION_CACHE = {}
ETA_MIN_S = 30  # shorter times left are not worth a log line
TERMINATE_GRACE_S = 5.0  # seconds between terminate() and kill() on cancel
EXE_NAME = "geodiff.exe" if sys.platform == "win32" else "geodiff"
BIN_DIR = "Scripts" if sys.platform == "win32" else "bin"

INSTALL_HINT = (
    "Run 'Install geodiff' (Processing Toolbox > geodiff), which creates a Python environment under the QGIS "
    "profile, installs geodiff into it and sets its path. Or install geodiff by hand in its own Python (>= 3.11) "
    "virtual environment, e.g.\n"
    "  python3 -m venv ~/geodiff-venv && ~/geodiff-venv/bin/pip install /path/to/geodiff\n"
    "then set the full path of the 'geodiff' program "
    f"(e.g. ~/geodiff-venv/{BIN_DIR}/{EXE_NAME}) in Processing > Options > Providers > geodiff > "
    "'geodiff executable', or set the GEODIFF_EXECUTABLE environment variable."
)


def _candidates():
    """Common places for a geodiff venv, checked when nothing is configured and geodiff is not on PATH."""
    from qgis.core import QgsApplication

    # where 'Install geodiff' puts it (the setting it writes may have been cleared)
    yield Path(QgsApplication.qgisSettingsDirPath()) / "geodiff" / "venv" / BIN_DIR / EXE_NAME
    home = Path.home()
    for venv in ("geodiff-venv", ".venv", "venv", ".virtualenvs/geodiff", "geodiff/.venv"):
        yield home / venv / BIN_DIR / EXE_NAME
    yield home / ".local" / "bin" / EXE_NAME  # pipx / pip --user


def find_executable(configured=None):
    """Return the geodiff executable: the provider setting, then $GEODIFF_EXECUTABLE, PATH, common venvs.

    Raises QgsProcessingException with installation instructions when none is usable.
    """
    for source, value in (
        ("Processing option 'geodiff executable'", configured),
        ("GEODIFF_EXECUTABLE environment variable", os.environ.get(EXECUTABLE_SETTING)),
    ):
        if value:
            path = Path(value).expanduser()
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
            # An explicit setting that is wrong is an error, not a reason to silently use another geodiff.
            raise QgsProcessingException(
                f"The {source} points to '{value}', which is not an executable file.\n{INSTALL_HINT}"
            )
    found = shutil.which("geodiff")
    if found:
        return found
    for path in _candidates():
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise QgsProcessingException(f"The geodiff command-line tool was not found.\n{INSTALL_HINT}")


def installed_models(executable):
    """Names of the models geodiff has installed (``geodiff models --json``), default first; asked once per
    session and executable. Falls back to the default model's name when geodiff cannot be asked."""
    if executable is None:
        return [DEFAULT_MODEL]
    if executable not in _MODELS_CACHE:
        try:
            listing = run_json(executable, ["models", "--json"], timeout_s=30)
            models = listing.get("models", [])
            names = [m["name"] for m in models if m.get("default")] + [
                m["name"] for m in models if not m.get("default")
            ]
            _MODELS_CACHE[executable] = names or [DEFAULT_MODEL]
        except QgsProcessingException:
            _MODELS_CACHE[executable] = [DEFAULT_MODEL]
    return list(_MODELS_CACHE[executable])


def geodiff_version(executable):
    """``geodiff --version``'s number (asked once per session and executable), or '?'."""
    if executable not in _VERSION_CACHE:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        try:
            done = subprocess.run(
                [executable, "--version"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=60, env=env, creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
            )  # fmt: skip
            words = done.stdout.split()
            _VERSION_CACHE[executable] = words[-1] if done.returncode == 0 and words else "?"
        except (OSError, subprocess.TimeoutExpired):
            _VERSION_CACHE[executable] = "?"
    return _VERSION_CACHE[executable]


def plugin_version():
    """The plugin's version, from its metadata.txt."""
    import configparser

    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read(Path(__file__).with_name("metadata.txt"), encoding="utf-8")
    return metadata.get("general", "version", fallback="?")


def _pump(stream, lines):
    """Reader thread: a blocking readline must not stop the main loop from noticing a cancel."""
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


PR_SET_PDEATHSIG = 1


def _die_with_parent_hook():
    """Linux: a ``preexec_fn`` that has the kernel send geodiff SIGTERM when the thread that started it dies, so
    geodiff never outlives QGIS (killed, crashed or closed during a run); geodiff unwinds SIGTERM like Ctrl-C,
    removing its temporary files. The algorithm's thread waits for geodiff, so this only fires when QGIS goes.
    None where it is not available. libc is looked up here, before the fork: the child only makes the call."""
    import ctypes

    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_options():
    """Popen options that tie geodiff's life to QGIS's and open no console window."""
    if sys.platform.startswith("linux"):
        hook = _die_with_parent_hook()
        return {"preexec_fn": hook} if hook else {}
    return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)}


def _stop(process):
    """Terminate, then kill if it does not exit within TERMINATE_GRACE_S; always reaps the process."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=TERMINATE_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


class OutputHandler:
    """Turns CLI output lines into feedback calls and remembers error messages."""

    def __init__(self, feedback, on_plan=None):
        self.feedback = feedback
        self.on_plan = on_plan  # called with geodiff's plan event (what the run costs); may raise to stop it
        self.errors = []  # messages of "Error: ..." lines
        self.tail = []  # last plain lines, reported when a failure printed no "Error:" line
        self._last_stage = None
        self._last_tenth = None

    def line(self, line):
        line = line.strip()
        if not line:
            return
        msg = None
        if line.startswith("{"):
            try:
                msg = json.loads(line)
            except ValueError:
                pass
        if isinstance(msg, dict):
            self._json(msg)
        elif line.startswith("Error:"):  # reported once, by the exception run_geodiff raises
            self.errors.append(line[len("Error:") :].strip())
        else:
            self.tail = (self.tail + [line])[-5:]
            self.feedback.pushConsoleInfo(line)

    def _json(self, msg):
        fb = self.feedback
        if "progress" in msg:
            fb.setProgress(100.0 * float(msg["progress"]))
            text = str(msg.get("message") or "")
            # The dialog logs every progress text: set it once per stage ("denoising step 5/20" and "6/20" are
            # one stage), so each stage is one log line and the bar shows the rest.
            stage = "".join(c for c in text if not c.isdigit())
            eta = msg.get("eta_s")
            # The time left, when it is worth saying: at each new stage and every 10% between.
            tenth = int(10 * float(msg["progress"]))
            new_tenth = tenth != self._last_tenth and eta is not None and eta >= ETA_MIN_S
            if text and (stage != self._last_stage or new_tenth):
                fb.setProgressText(
                    text + (f" ({describe_eta(eta)})" if eta is not None and eta >= ETA_MIN_S else "")
                )
                self._last_stage = stage
                self._last_tenth = tenth
        elif msg.get("event") == "device":
            fb.pushInfo(f"geodiff runs on device: {msg.get('device')} (dtype {msg.get('dtype', '?')})")
        elif msg.get("event") == "plan":
            fb.pushInfo(describe_plan(msg))
            if self.on_plan is not None:
                self.on_plan(msg)
        else:
            fb.pushInfo(", ".join(f"{k}: {v}" for k, v in msg.items()))


def describe_eta(seconds):
    """'about 40 s left', 'about 12 min left', 'about 2.5 h left'."""
    if seconds < 120:
        return f"about {seconds:.0f} s left"
    if seconds < 2 * 3600:
        return f"about {seconds / 60:.0f} min left"
    return f"about {seconds / 3600:.1f} h left"


def describe_plan(plan):
    """One line: what a synthesis will cost (grid, windows, estimated time), from geodiff's plan event."""
    text = (
        f"{plan.get('width')} x {plan.get('height')} px at {plan.get('resolution_m')} m/px in {plan.get('crs')}, "
        f"{plan.get('windows')} windows of the model, {plan.get('steps')} steps"
        + (f" ({plan['quality']} quality)" if plan.get("quality") else "")
        + f" on {plan.get('device')}"
    )
    seconds = plan.get("seconds_estimate")
    if seconds is not None:
        text += f", estimated {seconds:.0f} s" if seconds < 120 else f", estimated {seconds / 60:.1f} min"
    return text


def run_json(executable, args, timeout_s=300):
    """Run a geodiff command that prints one JSON document on stdout (``--dry-run``, ``models --json``)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    try:
        done = subprocess.run(
            [executable, *map(str, args)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout_s, env=env, creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QgsProcessingException(f"Could not run {executable}: {exc}") from exc
    if done.returncode != 0:
        errors = [ln[len("Error:") :].strip() for ln in done.stderr.splitlines() if ln.startswith("Error:")]
        raise QgsProcessingException(
            f"geodiff failed (exit code {done.returncode}): {' '.join(errors) or done.stderr.strip()[-500:]}"
        )
    try:
        return json.loads(done.stdout)
    except ValueError:
        pass
    for line in reversed(done.stdout.splitlines()):  # a JSON line after other output
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise QgsProcessingException(f"geodiff printed no JSON: {done.stdout[-300:]}")


def run_geodiff(
    executable, args, feedback, poll_s=0.1, translate=None, on_plan=None, name="geodiff", on_line=None
):
    """Run ``executable *args``, streaming progress; raise QgsProcessingException on failure or cancel.

    ``translate`` rewrites geodiff's error text (e.g. CLI option names into the dialog's parameter names).
    ``on_plan(plan)`` sees geodiff's cost estimate (its first event) and may raise to stop the run there.
    On cancel geodiff gets SIGTERM at once, which it handles like Ctrl-C: its temporary files are removed.
    ``name`` is what messages call the program (the installer runs python and pip through here too).
    ``on_line(line)`` sees every output line first (the installer's progress from pip's lines).
    """
    command = [executable, *map(str, args)]
    feedback.pushCommandInfo(" ".join(f'"{a}"' if " " in a else a for a in command))
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # line-by-line progress through the pipe
    env.pop("PYTHONPATH", None)  # QGIS's own Python paths must not leak into geodiff's Python
    env.pop("PYTHONHOME", None)
    # geodiff stops (cleanly, as on cancel) when this pipe closes, which QGIS's death does on every OS
    watched = name == "geodiff"
    if watched:
        env["GEODIFF_EXIT_WITH_STDIN"] = "1"
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if watched else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
            **_child_options(),
        )
    except OSError as exc:
        hint = f"\n{INSTALL_HINT}" if name == "geodiff" else ""
        raise QgsProcessingException(f"Could not start {executable}: {exc}{hint}") from exc

    lines = queue.Queue()
    reader = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
    reader.start()
    output = OutputHandler(feedback, on_plan)
    try:
        while True:
            if feedback.isCanceled():
                _stop(process)
                raise QgsProcessingException(f"{name} was canceled")
            try:
                line = lines.get(timeout=poll_s)
            except queue.Empty:
                continue
            if line is None:  # output closed: the process is exiting
                break
            if on_line is not None:
                on_line(line)
            output.line(line)
        code = process.wait()
    finally:
        if process.poll() is None:  # any exception above (including from feedback) must not leave it running
            _stop(process)
        if process.stdin is not None:
            process.stdin.close()
        reader.join(timeout=1)  # EOF follows the exit unless a grandchild still holds the pipe
        if not reader.is_alive():
            process.stdout.close()
    if code != 0:
        detail = "\n".join(output.errors or output.tail) or "no error message"
        if translate is not None:
            detail = translate(detail)
        raise QgsProcessingException(f"{name} failed (exit code {code}): {detail}")
    feedback.setProgress(100)
