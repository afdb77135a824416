"""Run s3prl downstream tasks on a frozen (or fine-tuned) upstream, through s3prl's own runner.

:func:`run_task` (one seed) and :func:`run_seeds` (several seeds, one process) launch a subprocess
(``python -m speechdissect.downstream.runner SPEC.json``) that

1. builds the upstream exactly as s3prl's ``Runner`` does (``getattr(s3prl.hub, name)(ckpt=...)``) and
   fails with a clear message before any training when it does not load or the layer is out of range;
2. counts the upstream's parameters and times its forward pass on a 3 s input (median of a few);
3. for each seed calls ``s3prl.run_downstream.main()`` with ``-m train -c <our config> -d <expert>
   -u <upstream> -k <ckpt> -p <expdir> [-l <layer>] --seed <seed> --device <device>``: s3prl's real
   runner trains the expert and evaluates ``eval_dataloaders`` (dev and test) every ``eval_step``, as
   s3prl's own configs do. The frozen upstream's outputs are remembered per batch (s3prl's buckets
   are fixed groups of utterances), which changes no number but makes epochs after the first cheap.

With ``finetune=True`` the upstream is trained too (s3prl's ``-f`` / ``--upstream_trainable``: the
upstream in train mode, its parameters in the optimizer, optionally with their own learning rate
``upstream_lr``); its outputs change every step, so nothing is remembered across batches.

The test score reported is the test metric at the step with the best dev metric (what evaluating
s3prl's ``best-states-dev.ckpt`` on test gives, without a second process), read from the tensorboard
scalars the expert logs. The parent then writes ``result.json`` atomically.

Files in each ``expdir``: ``downstream_config.yaml`` (the config passed with ``-c``),
``run_downstream.log`` (stdout+stderr of s3prl for this seed), ``probe.json`` (upstream params /
latency, trainable params, timings), s3prl's own files (``log.log``, ``events.out.tfevents.*``,
``args_*.yaml``, ``config_*.yaml``, checkpoints: deleted unless ``keep_checkpoints``), ``result.json``;
the first seed's directory also holds ``launcher.json`` / ``launcher.log`` (the subprocess spec and
output).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from speechdissect.downstream.tasks import Task, build_config, check_datarc, count_train_items, get_task, load_datarc

EXIT_UPSTREAM = 3
EXIT_LAYER = 4
_S3PRL_OUTPUTS = ("log.log", "*.ckpt", "events.out.tfevents.*", "args_*.yaml", "config_*.yaml", "*-hyp.ark",
                  "predictions/*.tsv",
                  "*-ref.ark", "probe.json", "result.json", "run_downstream.log", "downstream_config.yaml",
                  "launcher.json", "launcher.log")


class UpstreamLoadError(RuntimeError):
    """The upstream checkpoint could not be loaded through s3prl."""


class DownstreamRunError(RuntimeError):
    """s3prl's downstream runner failed."""


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write JSON to a temporary sibling, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_scalars(expdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """All tensorboard scalars s3prl's runner logged in ``expdir``: tag -> [(step, value), ...]."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(glob.glob(os.path.join(expdir, "events.out.tfevents.*"))):
        data = Path(path).read_bytes()
        i = 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            i += 12
            event = event_pb2.Event()
            event.ParseFromString(data[i : i + n])
            i += n + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
    return out


def select_score(task: Task, scalars: Mapping[str, list[tuple[int, float]]]) -> dict:
    """Test metric at the best dev step (earliest on ties, as s3prl saves on strict improvement)."""
    import math

    dev = dict(scalars.get(task.tag(task.dev_split), []))
    test = dict(scalars.get(task.tag(task.test_split), []))
    if not test:
        raise DownstreamRunError(f"no {task.tag(task.test_split)!r} scalar was logged (tags: {sorted(scalars)})")
    finite = [(s, v) for s, v in sorted(dev.items()) if math.isfinite(v) and s in test]
    if finite:
        pick = max if task.higher_is_better else min
        best = pick(v for _, v in finite)
        best_step = next(s for s, v in finite if v == best)
    else:  # empty dev split: fall back to the last evaluation
        best_step = max(test)
    last = max(test)
    sc = task.scale
    # group scores logged by the wrapper experts: '{test tag}_by_{grouping}/{group}' -> score_by_{grouping}
    by: dict[str, dict[str, float]] = {}
    prefix = task.tag(task.test_split) + "_by_"
    for tag, vals in sorted(scalars.items()):
        if tag.startswith(prefix) and "/" in tag[len(prefix):]:
            grouping, group = tag[len(prefix):].split("/", 1)
            at = dict(vals)
            if best_step in at:
                by.setdefault(f"score_by_{grouping}", {})[group] = at[best_step] * sc
    return {
        "score": test[best_step] * sc,
        "dev_score": dev.get(best_step, float("nan")) * sc,
        "best_step": best_step,
        "score_last": test[last] * sc,
        **by,
        "history": {
            split: [[s, v * sc] for s, v in sorted(vals.items())]
            for split, vals in ((task.dev_split, dev), (task.test_split, test))
        },
    }


def readout_name(layer: int | None) -> str:
    """How a probe's input is named in tables: ``weighted`` (s3prl's weighted sum), ``last``, ``L{k}``."""
    if layer is None:
        return "weighted"
    return "last" if layer == -1 else f"L{layer}"


def resolve_readouts(readouts: Sequence[str], n_hidden: int | None = None) -> list[int | None]:
    """Layers (``run_seeds(layers=...)``) of readout names: ``weighted`` -> None, ``last`` -> -1,
    ``each`` -> every hidden state ``0 .. n_hidden - 1`` (needs ``n_hidden``); duplicates dropped."""
    layers: list[int | None] = []
    for r in readouts:
        if r == "weighted":
            layers.append(None)
        elif r == "last":
            layers.append(-1)
        elif r == "each":
            if not n_hidden:
                raise ValueError("readout 'each' needs the upstream's number of hidden states (n_hidden)")
            layers += list(range(int(n_hidden)))
        else:
            raise ValueError(f"unknown readout {r!r}: use weighted, last or each")
    return list(dict.fromkeys(layers))


def _clean_expdir(expdir: Path) -> None:
    for pattern in _S3PRL_OUTPUTS:
        for p in expdir.glob(pattern):
            if p.is_file():
                p.unlink()


def run_task(
    task: str,
    upstream: str,
    ckpt: str | os.PathLike | None,
    data,
    expdir: str | os.PathLike,
    seed: int = 0,
    steps: int | None = None,
    device: str = "cpu",
    layer: int | None = None,
    *,
    result_path: str | os.PathLike | None = None,
    **options,
) -> dict:
    """Train and evaluate one downstream task on a frozen upstream with s3prl's runner.

    Parameters
    ----------
    task : str
        Registered task (:data:`speechdissect.downstream.tasks.TASKS`); unknown names raise
        ``ValueError`` before anything runs.
    upstream : str
        s3prl hub entry, e.g. ``hubert_local``, ``mockingjay_local``, ``wav2vec2_local`` or a named
        model such as ``hubert_base`` (then ``ckpt`` is None).
    ckpt : path or None
        Upstream checkpoint for ``*_local`` entries (``-k``).
    data : path or mapping
        Task data directory written by :func:`~speechdissect.downstream.tasks.prepare_task_data` (or
        its ``datarc.yaml``), or a mapping of datarc path keys.
    expdir : path
        s3prl experiment directory (``-p``); earlier s3prl outputs in it are removed first.
    seed : int
        ``--seed`` (model init, data order).
    steps : int, optional
        Training steps (``runner.total_steps``); default from the task config.
    device : str
        ``--device``.
    layer : int, optional
        Hidden state to probe (``-l``; 0 = encoder input, L = last layer); None = s3prl's learnable
        weighted sum of all hidden states.
    result_path : path, optional
        Where to write the result JSON (default ``expdir/result.json``), atomically.
    **options
        See :func:`run_seeds` (``name``, ``variant``, ``threads``, ``overrides``, ...).

    Returns
    -------
    dict
        The result: ``score`` (test metric at the best dev step), ``dev_score``, ``score_last``,
        ``metric``, ``steps``, ``wall_seconds``, ``train_seconds``, ``downstream_params``,
        ``featurizer_params``, ``trainable_params``, ``upstream_params``, ``upstream_latency_ms``, ...
    """
    return run_seeds(task, upstream, ckpt, data, [expdir], [seed], steps, device, layer,
                     result_paths=None if result_path is None else [result_path], **options)[0]


def run_seeds(
    task: str,
    upstream: str,
    ckpt: str | os.PathLike | None,
    data,
    expdirs: Sequence[str | os.PathLike],
    seeds: Sequence[int],
    steps: int | None = None,
    device: str = "cpu",
    layer: int | None = None,
    *,
    name: str | None = None,
    variant: str = "original",
    result_paths: Sequence[str | os.PathLike] | None = None,
    threads: int = 1,
    upstream_model_config: str | None = None,
    overrides: Mapping | None = None,
    keep_checkpoints: bool = False,
    latency_runs: int = 5,
    latency_seconds: float = 3.0,
    feature_cache_mb: float = 4096,
    timeout: float | None = None,
    finetune: bool = False,
    upstream_lr: float | None = None,
    layers: Sequence[int | None] | None = None,
) -> list[dict]:
    """:func:`run_task` for several seeds in one process, one s3prl experiment directory per seed.

    The seeds run one after the other through ``s3prl.run_downstream.main()`` in one subprocess, so
    the imports, the upstream check and latency measurement, and the frozen upstream's outputs
    (identical across seeds: s3prl's buckets do not depend on ``--seed``) are shared. Each seed's
    numbers are exactly those of a separate :func:`run_task` call.

    Other parameters
    ----------------
    name, variant : str
        Model name and variant recorded in the results (``name`` defaults to the checkpoint's stem).
    result_paths : list of paths, optional
        Result JSON per seed (default ``expdir/result.json``), written atomically.
    threads : int
        Torch threads of the subprocess.
    upstream_model_config : str, optional
        ``-g``, for hub entries that take a model config file.
    overrides : mapping, optional
        Dotted config keys to override, e.g. ``{"optimizer.lr": 1e-3}``.
    keep_checkpoints : bool
        Keep s3prl's ``*.ckpt`` files (deleted by default; they are not needed for the scores).
    latency_runs, latency_seconds : int, float
        Forward passes timed (median reported) and their input length.
    feature_cache_mb : float
        Memory for remembering the frozen upstream's output per batch within the process (0 = off;
        s3prl's buckets repeat, so this changes no number, only the time). Always off with
        ``finetune``.
    timeout : float, optional
        Seconds before the subprocess is killed.
    finetune : bool
        Train the upstream with the downstream model (s3prl's ``-f``, ``--upstream_trainable``), as
        fine-tuning does; ``trainable_params`` then counts the upstream's parameters too.
    upstream_lr : float, optional
        Learning rate of the upstream's parameters when fine-tuning (an optimizer parameter group of
        its own; the featurizer and downstream model keep the task config's ``optimizer.lr``). None:
        one learning rate for all, as s3prl does.
    layers : list of int or None, optional
        The readout of each run (one per expdir), overriding ``layer``: None = s3prl's weighted sum,
        ``k`` = hidden state ``k`` alone (``-l k``), negative = counted from the last (``-1``: the last
        hidden state, whatever the depth). One process probes several readouts of the same upstream
        while computing its outputs once (layer-wise curves, last-layer scores of edited models).
    """
    t = get_task(task)
    if upstream_lr is not None and not finetune:
        raise ValueError("upstream_lr needs finetune=True (a frozen upstream has no trainable parameters)")
    if upstream_lr is not None and not float(upstream_lr) > 0:
        raise ValueError(f"upstream_lr must be positive, got {upstream_lr!r}")
    if len(expdirs) != len(seeds) or not seeds:
        raise ValueError(f"need one expdir per seed, got {len(expdirs)} expdirs for {len(seeds)} seeds")
    if result_paths is not None and len(result_paths) != len(seeds):
        raise ValueError("need one result path per seed")
    datarc = load_datarc(data)
    check_datarc(t, datarc)
    if ckpt is not None and not Path(ckpt).is_file():
        raise UpstreamLoadError(f"upstream checkpoint not found: {ckpt}")
    layers = [layer] * len(seeds) if layers is None else list(layers)
    if len(layers) != len(seeds):
        raise ValueError(f"need one layer per seed, got {len(layers)} layers for {len(seeds)} seeds")
    for lay in layers:
        if lay is not None and (isinstance(lay, bool) or not isinstance(lay, int)):
            raise ValueError(f"layer must be an int (negative: from the last hidden state) or None, got {lay!r}")
    cfg = build_config(t, datarc, steps=steps, overrides=overrides, n_train=count_train_items(t, datarc))

    runs = []
    for expdir, seed, lay in zip(expdirs, seeds, layers):
        expdir = Path(expdir).resolve()
        expdir.mkdir(parents=True, exist_ok=True)
        _clean_expdir(expdir)
        cfg_path = expdir / "downstream_config.yaml"
        with open(cfg_path, "w") as fh:
            yaml.safe_dump(cfg, fh, sort_keys=False)
        argv = ["-m", "train", "-c", str(cfg_path), "-d", t.expert, "-u", upstream, "-p", str(expdir),
                "--seed", str(int(seed)), "--device", device]
        if ckpt is not None:
            argv += ["-k", str(Path(ckpt).resolve())]
        if lay is not None:
            argv += ["-l", str(lay)]
        if upstream_model_config is not None:
            argv += ["-g", str(upstream_model_config)]
        if finetune:
            argv += ["-f"]
        runs.append({"argv": argv, "expdir": str(expdir), "seed": int(seed), "layer": lay,
                     "log": str(expdir / "run_downstream.log"),
                     "probe_out": str(expdir / "probe.json")})
    spec = {"latency_runs": latency_runs, "latency_seconds": latency_seconds, "threads": threads, "layers": layers,
            "feature_cache_mb": 0 if finetune else feature_cache_mb, "runs": runs,
            "upstream_lr": None if upstream_lr is None else float(upstream_lr)}
    first = Path(runs[0]["expdir"])
    spec_path = first / "launcher.json"
    write_json_atomic(spec_path, spec)
    cmd = [sys.executable, "-m", "speechdissect.downstream.runner", str(spec_path)]

    env = subprocess_env(threads, device)
    launcher_log = first / "launcher.log"
    start = time.perf_counter()
    with open(launcher_log, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.run(cmd, cwd=first, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    process_wall = time.perf_counter() - start

    results, failure = [], None
    for k, run in enumerate(runs):
        probe_path = Path(run["probe_out"])
        probe = json.loads(probe_path.read_text()) if probe_path.is_file() else {}
        if "error" in probe or not probe.get("finished"):
            failure = failure or (run, probe)
            continue
        expdir = Path(run["expdir"])
        scores = select_score(t, read_scalars(expdir))
        if not keep_checkpoints:
            for p in expdir.glob("*.ckpt"):
                p.unlink()
        result = {
            "task": t.name,
            "expert": t.expert,
            "metric": t.metric,
            "higher_is_better": t.higher_is_better,
            **scores,
            "upstream": name or (Path(ckpt).stem if ckpt is not None else upstream),
            "s3prl_upstream": upstream,
            "ckpt": str(Path(ckpt).resolve()) if ckpt is not None else None,
            "variant": variant,
            "seed": run["seed"],
            "layer": run["layer"],
            "readout": readout_name(run["layer"]),
            "finetune": bool(finetune),
            "lr": float(cfg.get("optimizer", {}).get("lr", float("nan"))),
            "upstream_lr": (float(upstream_lr) if upstream_lr is not None else
                            float(cfg.get("optimizer", {}).get("lr", float("nan")))) if finetune else None,
            "steps": int(cfg["runner"]["total_steps"]),
            "device": device,
            "threads": threads,
            "wall_seconds": probe.get("run_seconds"),
            "cpu_seconds": probe.get("run_cpu_seconds"),
            "startup_seconds": probe.get("startup_seconds"),
            "startup_cpu_seconds": probe.get("startup_cpu_seconds"),
            "process_wall_seconds": process_wall,
            "seeds_in_process": len(runs),
            "train_seconds": probe.get("train_seconds"),
            "downstream_params": probe.get("downstream_params"),
            "featurizer_params": probe.get("featurizer_params"),
            "upstream_trainable_params": probe.get("upstream_trainable_params", 0),
            "upstream_updated_params": probe.get("upstream_updated_params", 0),
            "trainable_params": (probe.get("downstream_params") or 0) + (probe.get("featurizer_params") or 0)
            + (probe.get("upstream_trainable_params") or 0),
            "upstream_params": probe.get("upstream_params"),
            "upstream_latency_ms": probe.get("latency_ms"),
            "upstream_latency_runs_ms": probe.get("latency_runs_ms"),
            "latency_input_seconds": latency_seconds,
            "n_hidden_states": probe.get("n_hidden_states"),
            "hidden_dim": probe.get("hidden_dim"),
            "feature_cache": probe.get("feature_cache"),
            "config": str(expdir / "downstream_config.yaml"),
            "expdir": str(expdir),
            "versions": probe.get("versions", {}),
        }
        write_json_atomic(result_paths[k] if result_paths else expdir / "result.json", result)
        results.append(result)
    if failure is None and proc.returncode != 0:
        failure = (runs[len(results)] if len(results) < len(runs) else runs[-1], {})
    if failure is not None:
        run, probe = failure
        if proc.returncode == EXIT_UPSTREAM:
            raise UpstreamLoadError(probe.get("error", f"upstream {upstream} failed to load {ckpt}; see {launcher_log}"))
        if proc.returncode == EXIT_LAYER:
            raise ValueError(probe.get("error", f"bad layer in {layers}; see {launcher_log}"))
        logs = [p for p in (Path(run["log"]), launcher_log) if p.is_file()]
        tail = "".join(logs[0].read_text(errors="replace").splitlines(keepends=True)[-25:]) if logs else ""
        raise DownstreamRunError(f"s3prl run_downstream failed (exit {proc.returncode}) for task {task}, seed "
                                 f"{run['seed']}; log: {logs[0] if logs else launcher_log}\n{tail}")
    return results


def subprocess_env(threads: int, device: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of the runner subprocess: this package first on the path, ``threads`` BLAS threads.

    With a CPU ``device`` the GPUs are hidden (``CUDA_VISIBLE_DEVICES=""``): s3prl 0.4.18's
    ``Runner.evaluate`` calls ``torch.cuda.device(args.device)`` whenever CUDA is visible, which
    raises ``ValueError`` for ``"cpu"`` in torch 2.8, so a CPU probe would die at its first
    evaluation on a GPU machine.
    """
    env = dict(os.environ if base is None else base)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("PYTHONWARNINGS", "ignore")
    if str(device).split(":")[0] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


# --------------------------------------------------------------------------- subprocess side


def _nbytes(obj) -> int:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _memo_upstream_class():
    import hashlib

    import torch

    class MemoUpstream(torch.nn.Module):
        """Frozen upstream whose outputs are remembered per batch of waveforms.

        s3prl's runner forwards the frozen upstream (eval mode, no grad) for every batch of every
        epoch and every evaluation. Its buckets are fixed groups of utterances (only their order is
        shuffled), so the same batch gives the same output: it is computed once and reused, bit for
        bit (the key is each waveform's length and a BLAKE2 hash of its samples). Anything with
        gradients enabled or in training mode passes through uncached.
        """

        def __init__(self, upstream, max_bytes: int, cache: dict | None = None):
            super().__init__()
            self.upstream = upstream
            self.max_bytes = max_bytes
            self.cache: dict = {} if cache is None else cache  # may be shared by runs of one upstream
            self.hits = 0
            self.misses = 0

        def shared_bytes(self) -> int:
            return int(self.cache.get("__bytes__", 0))

        def get_downsample_rates(self, key):
            return self.upstream.get_downsample_rates(key)

        def forward(self, wavs):
            if torch.is_grad_enabled() or self.upstream.training or self.max_bytes <= 0:
                return self.upstream(wavs)
            key = tuple(
                (int(w.shape[0]), hashlib.blake2b(w.detach().cpu().numpy().tobytes(), digest_size=16).digest()) for w in wavs
            )
            out = self.cache.get(key)
            if out is not None:
                self.hits += 1
                return out
            out = self.upstream(wavs)
            self.misses += 1
            size = _nbytes(out)
            used = self.cache.setdefault("__bytes__", 0)
            if used + size <= self.max_bytes:
                self.cache[key] = out
                self.cache["__bytes__"] = used + size
            return out

    return MemoUpstream


def _probe_upstream(hub, spec: dict, ns: argparse.Namespace) -> dict:
    """Load the upstream like s3prl's Runner, time its forward pass, check the layer.

    Raises ``_ProbeError`` (with the exit code) when it does not load, does not run, or the layer is
    out of range.
    """
    import torch

    name, ckpt = ns.upstream, ns.upstream_ckpt
    entry = getattr(hub, name, None)
    if entry is None:
        import difflib

        try:
            names = sorted(hub.options())
        except Exception:  # noqa: BLE001 - fall back to the module's public names
            names = sorted(n for n in dir(hub) if not n.startswith("_"))
        close = difflib.get_close_matches(name, names, n=8, cutoff=0.5)
        raise _ProbeError(EXIT_UPSTREAM, f"unknown s3prl upstream {name!r} (not in s3prl.hub). "
                                         f"Close matches: {', '.join(close) or 'none'}. Valid names: the {len(names)} "
                                         f"s3prl.hub entries, with a checkpoint: {', '.join(n for n in names if n.endswith('_local'))}; "
                                         "all of them: speechdissect.upstreams.available_names()")
    from speechdissect.upstreams.registry import CheckpointError, check_local_checkpoint, cuda_synchronize

    if ckpt is not None:
        try:
            check_local_checkpoint(ckpt)  # before s3prl's loader unpickles or eval()s anything in it
        except CheckpointError as exc:
            raise _ProbeError(EXIT_UPSTREAM, str(exc)) from exc
    try:
        model = entry(ckpt=ckpt, model_config=ns.upstream_model_config, refresh=False)
    except Exception as exc:  # noqa: BLE001 - report any loader failure clearly
        raise _ProbeError(EXIT_UPSTREAM, f"upstream {name} could not load checkpoint {ckpt}: {type(exc).__name__}: {exc}. "
                                         f"Check that the file is a {name} checkpoint (s3prl's *_local format).") from exc
    model = model.to(ns.device).eval()
    wav = [torch.randn(int(spec["latency_seconds"] * 16000), device=ns.device)]
    runs = []
    with torch.no_grad():
        try:
            out = model(wav)  # warm-up
        except Exception as exc:  # noqa: BLE001
            raise _ProbeError(EXIT_UPSTREAM, f"upstream {name} ({ckpt}) loads but its forward pass fails: "
                                             f"{type(exc).__name__}: {exc}") from exc
        for _ in range(max(1, int(spec["latency_runs"]))):
            cuda_synchronize(ns.device)
            t0 = time.perf_counter()
            model(wav)
            cuda_synchronize(ns.device)
            runs.append((time.perf_counter() - t0) * 1000)
    hidden = out.get("hidden_states")
    n_hidden = len(hidden) if isinstance(hidden, (list, tuple)) else None
    for layer in spec.get("layers") or [ns.upstream_layer_selection]:
        if layer is not None and n_hidden is not None and not -n_hidden <= layer < n_hidden:
            raise _ProbeError(EXIT_LAYER, f"layer {layer} out of range: upstream {name} ({ckpt}) has hidden states "
                                          f"0..{n_hidden - 1} (or -{n_hidden}..-1 from the last)")
    import s3prl

    info = {
        "upstream_params": int(sum(p.numel() for p in model.parameters())),
        "latency_ms": statistics.median(runs),
        "latency_runs_ms": runs,
        "n_hidden_states": n_hidden,
        "hidden_dim": int(hidden[-1].shape[-1]) if n_hidden else None,
        "versions": {"s3prl": getattr(s3prl, "__version__", None), "torch": torch.__version__},
    }
    del model
    return info


def _memo_audio_loading(max_bytes: int = 2**30) -> None:
    """Decode each audio file once per process: s3prl's datasets call ``torchaudio.load`` for every
    utterance of every batch of every epoch. Same path, size and mtime -> a copy of the same tensor."""
    import torchaudio

    if getattr(torchaudio.load, "_speechdissect_memo", False):
        return
    load = torchaudio.load
    cache: dict = {}
    used = [0]

    def cached_load(uri, *args, **kwargs):
        if args or kwargs or not isinstance(uri, (str, os.PathLike)):
            return load(uri, *args, **kwargs)
        try:
            st = os.stat(uri)
        except OSError:
            return load(uri)
        key = (os.path.abspath(uri), st.st_size, st.st_mtime_ns)
        hit = cache.get(key)
        if hit is None:
            hit = load(uri)
            size = hit[0].numel() * hit[0].element_size()
            if used[0] + size <= max_bytes:
                cache[key] = hit
                used[0] += size
        return hit[0].clone(), hit[1]

    cached_load._speechdissect_memo = True
    torchaudio.load = cached_load


class _ProbeError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class _redirect_fds:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``path``."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = (os.dup(1), os.dup(2))
        self.fh = open(self.path, "a")
        os.dup2(self.fh.fileno(), 1)
        os.dup2(self.fh.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        for fd in self.saved:
            os.close(fd)
        self.fh.close()
        return False


def main(argv: list[str] | None = None) -> None:
    """Subprocess entry: ``python -m speechdissect.downstream.runner SPEC.json``.

    For each run of the spec: ``s3prl.run_downstream.main()`` with its command line, stdout/stderr
    to the run's log, then the run's ``probe.json`` (upstream params and latency, trainable params,
    timings, ``finished``). The upstream is checked once, before the first run.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        raise SystemExit("usage: python -m speechdissect.downstream.runner SPEC.json (written by run_seeds)")
    t_start, c_start = time.perf_counter(), time.process_time()
    spec = json.loads(Path(argv[0]).read_text())
    runs = spec["runs"]

    import builtins
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(max(1, int(spec["threads"])))
    ns = _peek_args(runs[0]["argv"])
    from speechdissect.upstreams.registry import install_lazy_hub

    install_lazy_hub(ns.upstream or "")
    from s3prl import hub, run_downstream

    from speechdissect.downstream.experts import install as install_experts

    install_experts()  # speechdissect's wrapper experts, e.g. -d speechdissect_utterance
    from s3prl.downstream import runner as s3prl_runner

    try:
        with _redirect_fds(runs[0]["log"]):
            info = _probe_upstream(hub, spec, ns)
    except _ProbeError as exc:
        for run in runs:
            Path(run["probe_out"]).write_text(json.dumps({"error": str(exc)}))
        print(f"[speechdissect] {exc}", file=sys.stderr)
        sys.exit(exc.code)
    startup, startup_cpu = time.perf_counter() - t_start, time.process_time() - c_start

    # Record the Runner s3prl builds (trainable parameters, train() time) and remember the frozen
    # upstream's outputs across batches, epochs, evaluations and seeds.
    memo_cls = _memo_upstream_class()
    shared_cache: dict = {}
    holder: dict = {}
    orig_init, orig_train = s3prl_runner.Runner.__init__, s3prl_runner.Runner.train
    orig_get_optimizer = s3prl_runner.Runner._get_optimizer
    upstream_lr = spec.get("upstream_lr")

    def init(self, *a, **k):
        orig_init(self, *a, **k)
        holder["runner"] = self
        if not self.upstream.trainable:
            self.upstream.model = memo_cls(self.upstream.model, int(float(spec["feature_cache_mb"]) * 2**20), shared_cache)

    def train(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return orig_train(self, *a, **k)
        finally:
            holder["train_seconds"] = time.perf_counter() - t0

    def get_optimizer(self, model_params):
        optimizer = orig_get_optimizer(self, model_params)
        holder["optimizer"] = optimizer
        if upstream_lr is not None and self.upstream.trainable:
            _split_upstream_group(optimizer, self.upstream.model, float(upstream_lr))
        return optimizer

    s3prl_runner.Runner.__init__, s3prl_runner.Runner.train = init, train
    s3prl_runner.Runner._get_optimizer = get_optimizer
    _memo_audio_loading()
    original_isinstance = builtins.isinstance  # s3prl's main() wraps it once per call
    for run in runs:
        holder.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        sys.argv = ["run_downstream.py", *run["argv"]]
        try:
            with _redirect_fds(run["log"]):
                try:
                    run_downstream.main()
                except BaseException:
                    import traceback

                    traceback.print_exc()
                    raise
        finally:
            builtins.isinstance = original_isinstance
        out = dict(info, run_seconds=time.perf_counter() - t0, run_cpu_seconds=time.process_time() - c0,
                   startup_seconds=startup, startup_cpu_seconds=startup_cpu,
                   train_seconds=holder.get("train_seconds"), finished=True)
        runner = holder.get("runner")
        if runner is not None:
            out["downstream_params"] = int(sum(p.numel() for p in runner.downstream.model.parameters() if p.requires_grad))
            out["featurizer_params"] = int(sum(p.numel() for p in runner.featurizer.model.parameters() if p.requires_grad))
            out["upstream_trainable_params"] = (
                int(sum(p.numel() for p in runner.upstream.model.parameters() if p.requires_grad))
                if runner.upstream.trainable else 0)
            # parameters the optimizer actually stepped (s3prl's HuBERT/wav2vec2 experts freeze the CNN
            # front-end with feature_grad_mult = 0, so they never get a gradient)
            opt = holder.get("optimizer")
            out["upstream_updated_params"] = (
                int(sum(p.numel() for p in runner.upstream.model.parameters() if opt.state.get(p)))
                if runner.upstream.trainable and opt is not None else 0)
            memo = runner.upstream.model
            if hasattr(memo, "hits"):
                out["feature_cache"] = {"hits": memo.hits, "misses": memo.misses, "mb": memo.shared_bytes() / 2**20}
        Path(run["probe_out"]).write_text(json.dumps(out))
        del runner
        holder.clear()


def _split_upstream_group(optimizer, upstream, lr: float) -> None:
    """Move the upstream's parameters of a fresh ``optimizer`` into a parameter group with learning rate ``lr``.

    Other settings of the group (betas, weight decay, ...) are kept; the remaining parameters keep the
    config's learning rate. Raises ``RuntimeError`` if the optimizer already has state (a resumed run).
    """
    if optimizer.state:
        raise RuntimeError("upstream_lr: the optimizer already has state (resumed run); start a fresh expdir")
    ids = {id(p) for p in upstream.parameters()}
    moved = []
    for group in optimizer.param_groups:
        keep = [p for p in group["params"] if id(p) not in ids]
        up = [p for p in group["params"] if id(p) in ids]
        if up:
            group["params"] = keep
            moved.append({**{k: v for k, v in group.items() if k != "params"}, "params": up, "lr": lr})
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    for group in moved:
        optimizer.add_param_group(group)
    print(f"[speechdissect] upstream parameters: own optimizer group, lr {lr:g} "
          f"({sum(p.numel() for g in moved for p in g['params'])} parameters)", flush=True)


def _peek_args(s3prl_argv: list[str]) -> argparse.Namespace:
    """The upstream options of an s3prl ``run_downstream`` command line (same flags as s3prl's parser)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-u", "--upstream")
    parser.add_argument("-k", "--upstream_ckpt")
    parser.add_argument("-g", "--upstream_model_config")
    parser.add_argument("-l", "--upstream_layer_selection", type=int)
    parser.add_argument("--device", default="cuda")
    return parser.parse_known_args(s3prl_argv)[0]


if __name__ == "__main__":
    main()
