"""`tfddn rank`: candidation with a loaded run or a served model (`tfddn.candidation`).

The one place that builds a `serving.client.ServingClient` for the library: tfddn's
library takes the client object and never imports `serving/`.
"""

from __future__ import annotations

__all__ = ["model_source", "run"]

_MIXTURE_POLICIES = ("thompson", "posterior_ts", "posterior_ucb")


def model_source(config):
    """`(source, spec, client or None)` of a config naming a loaded run or a served model
    (`RankConfig`, `OPEConfig`: `run_dir` or `rest_url` / `grpc_target`, `model_name`,
    `mc_samples`, `policy`, `spec`); the caller closes the client."""
    from tfddn import candidation
    from tfddn.spec import load_spec

    if config.run_dir:
        source, client = candidation.LoadedModel(config.run_dir, config.mc_samples), None
    else:
        from serving.client import ServingClient

        client = ServingClient(config.rest_url, config.grpc_target,
                               model_name=config.model_name)
        source = candidation.ServedModel(client, "grpc" if config.grpc_target else "rest",
                                         mixture=config.policy.name in _MIXTURE_POLICIES)
    try:
        spec = load_spec(config.spec) if config.spec else source.spec()
    except BaseException:
        if client is not None:
            client.close()
        raise
    return source, spec, client


def run(config, args=None) -> int:
    """Ranks as `config` (a `tfddn.configs.RankConfig`) says, writes `config.out` and
    prints one line."""
    import numpy as np

    from tfddn import candidation
    from tfddn.policy import make_policy
    from tfddn.tables import read_table, table_format, write_table

    table_format(config.out)  # a bad --out before any work
    source, spec, client = model_source(config)
    try:
        candidates = read_table(config.candidates, spec)
        contexts = read_table(config.contexts, spec)
        pairs = read_table(config.pairs, spec) if config.pairs else None
        sets = candidation.candidate_sets(candidates, contexts, spec, config.context_key,
                                          pairs, config.context_id, config.candidate_id)
        counts = None
        if config.counts:
            from tfddn.posterior import PairCounts

            counts = PairCounts.read(config.counts)
        policy = make_policy(config.policy)
        ranked = candidation.rank(source, spec, candidates, contexts, policy, config.top_n,
                                  np.random.default_rng(config.seed), counts=counts, sets=sets)
    finally:
        if client is not None:
            client.close()
    write_table(ranked, config.out, spec)
    served = ranked["context"].nunique()
    empty = sum(len(s) == 0 for s in sets)
    print(f"wrote the top {ranked['rank'].max()} of {served:,} contexts"
          + (f" ({empty:,} without candidates)" if empty else "")
          + f" by {policy} to {config.out}")
    return 0
