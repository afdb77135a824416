# Helper functions of rules/convexity.smk (kept apart from the rules, as snakemake --lint asks).


def convexity_targets():
    targets = [f"results/convexity/{ANALYSIS_CORPUS}/convexity_layers.png"]
    targets += [f"results/{u}/{ANALYSIS_CORPUS}/convexity/best_layers.json" for u in ANALYSIS_UPSTREAMS]
    targets += convexity_pruning_targets()
    return targets


def _layer_pruning():
    """pruning.layers (its task lists are checked by speechdissect.config_checks)."""
    return (config.get("pruning") or {}).get("layers") or {}


def finetune_steps(task):
    """Fine-tuning steps of ``task``: pruning.layers.finetune_steps, else downstream.steps, else the task config."""
    steps = _layer_pruning().get("finetune_steps") or {}
    return steps.get(task, ((config.get("downstream") or {}).get("steps") or {}).get(task))


def finetune_jobs(upstream=None):
    """(upstream, task, variant) fine-tuned for the convexity study: original and convex-{property}."""
    layers = _layer_pruning()
    if not layers.get("finetune", False):
        return []
    tasks = layers.get("tasks") or {}
    ft_tasks = layers.get("finetune_tasks", list(tasks))
    ups = (config.get("pruning") or {}).get("upstreams", []) if upstream is None else [upstream]
    return [(u, t, v) for u in ups for t in ft_tasks for v in ("original", f"convex-{tasks[t]}")]


def convexity_pruning_inputs(wildcards):
    """Frozen and fine-tuned results of the full, convexity-pruned and truncated models of one upstream."""
    layers = _layer_pruning()
    tasks = layers.get("tasks") or {}
    u = wildcards.upstream
    frozen = [(t, v) for t, prop in tasks.items() for v in ("original", f"convex-{prop}")]
    frozen += [(t, f"layers-{n}") for t in layers.get("depth_tasks", list(tasks)) for n in layers.get("depths", [])]
    base = f"results/{u}/{wildcards.corpus}/convexity"
    variants = sorted({v for _, v in frozen} - {"original"})
    return {
        # how to load the full model and each cut, for their side-by-side forward latency
        "model_specs": [f"results/upstreams/{u}/upstream.json", *(f"results/{u}/variants/{v}.json" for v in variants)],
        "best": f"{base}/best_layers.json",
        "summary": f"{base}/summary.tsv",
        "frozen": [f"results/{u}/downstream/{t}/{v}/results.json" for t, v in dict.fromkeys(frozen)],
        "finetuned": [f"results/{u}/downstream_ft/{t}/{v}/results.json" for _, t, v in finetune_jobs(u)],
    }


def convexity_pruning_targets():
    """The pruning table of every pruned upstream that the convexity study analyses."""
    if not _layer_pruning().get("tasks"):
        return []
    ups = [u for u in (config.get("pruning") or {}).get("upstreams", []) if u in ANALYSIS_UPSTREAMS]
    return [f"results/{u}/{ANALYSIS_CORPUS}/convexity/pruning.tsv" for u in ups]
