"""Serving speed: REST and gRPC against calling the loaded signature in-process.

Needs an exported tfddn model (`make demo` writes `saved_models/ddn/<version>`):

    python benchmarks/serving_latency.py --model_base_path saved_models/ddn

Measured side by side in one run, on the local TF-Serving-compatible server:
- latency p50 / p99 at batch 1 (sequential requests on one keep-alive connection or
  channel) for REST and gRPC, and for the loaded signature called in-process (the
  floor), printed as ratios to the floor;
- throughput (requests/s) with 16 and 32 concurrent clients;
- `mc_dropout` (T passes in one batched graph) against `serving_default` in-process at
  batch 1 and 1024;
- candidation-sized requests (`--candidates`, 1,000 rows: one context's candidate set)
  over REST and gRPC against the in-process call on the same rows (issue #13 targets:
  REST <= 1.5x, gRPC <= 1.2x);
- 32 concurrent batch-1 clients with and without `--enable_batching`
  (serving/configs/batching.config), in predictions/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import numpy as np


def _latest(export_base: str) -> str:
    versions = [int(d) for d in os.listdir(export_base) if d.isdigit()]
    if not versions:
        raise SystemExit(f"no exported version under {export_base}; run `make demo` first")
    return os.path.join(export_base, str(max(versions)))


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _time_calls(fn, repeats: int) -> list[float]:
    fn()  # warm-up (tracing, first allocation)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


async def _rest_calls(url: str, body: bytes, count: int, concurrency: int) -> list[float]:
    import aiohttp

    latencies: list[float] = []

    async def worker(session, n):
        for _ in range(n):
            start = time.perf_counter()
            async with session.post(url, data=body) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"REST {resp.status}")
            latencies.append(time.perf_counter() - start)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await worker(session, 3)  # warm-up
        latencies.clear()
        await asyncio.gather(*(worker(session, count // concurrency) for _ in range(concurrency)))
    return latencies


async def _grpc_calls(target: str, request, count: int, concurrency: int) -> list[float]:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        async def worker(n):
            for _ in range(n):
                start = time.perf_counter()
                await stub.Predict(request, timeout=30)
                latencies.append(time.perf_counter() - start)

        await worker(3)
        latencies.clear()
        await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_base_path", "--export_base", dest="export_base", default="saved_models/ddn")
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    parser.add_argument("--candidates", type=int, default=1000,
                        help="rows of the candidation-sized request")
    args = parser.parse_args(argv)

    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from serving.export import example_instances, instances_to_features, load_export_metadata
    from serving.server import ServerHandle
    from serving.server_config import ServerConfig
    from tfddn.spec import FeatureSpec
    from tfddn.training import load_run, load_training_data

    version_dir = _latest(args.export_base)
    meta = load_export_metadata(version_dir)
    spec = FeatureSpec.from_dict(meta["spec"])
    _, _, summary = load_run(meta["run_dir"])
    data = load_training_data(summary["train"]["data_dir"])
    rows = example_instances(spec, data.vocabularies, max(1024, args.candidates),
                             numeric_stats=data.numeric_stats)
    loaded = tf.saved_model.load(version_dir)
    one, batch = instances_to_features(spec, rows[:1]), instances_to_features(spec, rows[:1024])
    many = instances_to_features(spec, rows[:args.candidates])
    big_repeats = max(20, args.requests // 10)
    inproc_many = _time_calls(lambda: loaded.signatures["serving_default"](**many), big_repeats)

    floor = _time_calls(lambda: loaded.signatures["serving_default"](**one), args.requests)
    inproc = {}
    for sig in ("serving_default", "mc_dropout"):
        for size, feats in ((1, one), (1024, batch)):
            inproc[sig, size] = float(np.median(_time_calls(
                lambda: loaded.signatures[sig](**feats), 50 if size > 1 else 200)))

    handle = ServerHandle.start(ServerConfig(model_name="ddn",
                                             model_base_path=os.path.abspath(args.export_base)))
    try:
        url = f"{handle.rest_url}/v1/models/ddn:predict"
        body = json.dumps({"signature_name": "serving_default", "instances": rows[:1]}).encode()
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "ddn"
        request.model_spec.signature_name = "serving_default"
        for name, value in one.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
        big_body = json.dumps({"signature_name": "serving_default",
                               "instances": rows[:args.candidates]}).encode()
        big_request = predict_pb2.PredictRequest()
        big_request.model_spec.name = "ddn"
        big_request.model_spec.signature_name = "serving_default"
        for name, value in many.items():
            big_request.inputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
        big = {"rest": asyncio.run(_rest_calls(url, big_body, big_repeats, 1)),
               "grpc": asyncio.run(_grpc_calls(handle.grpc_target, big_request, big_repeats, 1))}
        results = {}
        for transport in ("rest", "grpc"):
            for concurrency in (1, 16, 32):
                start = time.perf_counter()
                if transport == "rest":
                    lat = asyncio.run(_rest_calls(url, body, args.requests, concurrency))
                else:
                    lat = asyncio.run(_grpc_calls(handle.grpc_target, request, args.requests,
                                                  concurrency))
                results[transport, concurrency] = (_percentiles(lat),
                                                   len(lat) / (time.perf_counter() - start))
    finally:
        handle.stop()
    config_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "serving", "configs")
    batched = ServerHandle.start(ServerConfig(
        model_name="ddn", model_base_path=os.path.abspath(args.export_base),
        enable_batching=True,
        batching_parameters_file=os.path.join(config_dir, "batching.config")))
    try:
        url_b = f"{batched.rest_url}/v1/models/ddn:predict"
        with_batching = {}
        for transport in ("rest", "grpc"):
            start = time.perf_counter()
            lat = (asyncio.run(_rest_calls(url_b, body, args.requests, 32)) if transport == "rest"
                   else asyncio.run(_grpc_calls(batched.grpc_target, request, args.requests, 32)))
            with_batching[transport] = len(lat) / (time.perf_counter() - start)
    finally:
        batched.stop()

    f50, f99 = _percentiles(floor)
    print(f"\nmodel {version_dir} ({meta['model_config']['kind']}, T={meta['mc_samples']}), "
          f"{os.cpu_count()} cores")
    print(f"{'batch 1':<24}{'p50 ms':>9}{'p99 ms':>9}{'p50 / floor':>13}")
    print(f"{'in-process signature':<24}{f50:>9.2f}{f99:>9.2f}{1.0:>13.1f}")
    for transport in ("rest", "grpc"):
        (p50, p99), _ = results[transport, 1]
        print(f"{transport.upper() + ' (1 client)':<24}{p50:>9.2f}{p99:>9.2f}{p50 / f50:>13.1f}")
    print(f"\n{'throughput, batch 1':<24}{'1 client':>10}{'16 clients':>12}{'32 clients':>12}")
    for transport in ("rest", "grpc"):
        cells = "".join(f"{results[transport, c][1]:>{w}.0f}"
                        for c, w in ((1, 10), (16, 12), (32, 12)))
        print(f"{transport.upper() + ' requests/s':<24}{cells}")
    print(f"{'in-process calls/s':<24}{1 / np.median(floor):>10.0f}")
    floor_many = float(np.median(inproc_many)) * 1e3
    print(f"\n{args.candidates} candidates in one request   p50 ms   ratio to in-process")
    print(f"{'in-process signature':<30}{floor_many:>8.2f}{1.0:>10.2f}")
    for transport, target in (("rest", 1.5), ("grpc", 1.2)):
        p50 = _percentiles(big[transport])[0]
        print(f"{transport.upper():<30}{p50:>8.2f}{p50 / floor_many:>10.2f}  (target <= {target})")
    print("\n32 concurrent batch-1 clients, predictions/s: without batching / with "
          "--enable_batching")
    for transport in ("rest", "grpc"):
        print(f"  {transport.upper():<6}{results[transport, 32][1]:>8.0f} / "
              f"{with_batching[transport]:>8.0f}")
    print("\nmc_dropout vs serving_default, in-process median:")
    for size in (1, 1024):
        sd, mc = inproc["serving_default", size], inproc["mc_dropout", size]
        print(f"  batch {size:<5} serving_default {sd * 1e3:8.2f} ms  mc_dropout {mc * 1e3:8.2f} ms"
              f"  ratio {mc / sd:5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
