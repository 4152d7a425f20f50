"""Two machines on one: two network namespaces joined by a veth pair, a `cnn-mnist train` node in
each (one process apiece, one thread), meeting through torchrun's c10d rendezvous over that link;
then the same training in one plain process, and the two results side by side.

Each node has its own model directory, as machines without a shared filesystem would: rank 0's
fills up, the other stays empty. Passes when the weights agree within 1e-5 and the test-set
accuracy is the same. Needs root (network namespaces) and iproute2's `ip`.

Usage: python benchmarks/two_nodes.py [--steps 50] [--data-dir D]
(default data: the real MNIST, downloaded on first use; the test suite passes a tiny synthetic set
and --program, a wrapper of `cnn-mnist` that accepts it)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cnn_mnist.training.checkpoints import list_checkpoints, load_checkpoint

SUBNET = "10.231.0"  # private addresses; inside the namespaces they meet nothing else
RENDEZVOUS_PORT = 29400
# fp32: the arithmetic in which one process and two agree to ~1e-8 (bf16 rounding compounds to ~5e-6)
TRAIN = ["--batch-size", "100", "--dropout", "0", "--log-probabilities-every", "0", "--eval-every", "0",
         "--save-checkpoints-steps", "10", "--precision", "fp32", "--json"]


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def namespaces_unavailable() -> str | None:
    """Why two network namespaces cannot be made here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux's; this is {sys.platform}"
    if shutil.which("ip") is None:
        return "iproute2's `ip` command is not installed"
    probe = f"cnn-probe-{os.getpid()}"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip() or made.returncode} (needs root with CAP_SYS_ADMIN)"
    ip("netns", "delete", probe, check=False)
    return None


@contextlib.contextmanager
def two_linked_namespaces():
    """Namespaces A and B, each with its end of a veth pair: A is SUBNET.1, B is SUBNET.2."""
    tag = os.getpid() % 100_000
    nodes = [(f"cnn-node-a-{tag}", f"cnnva{tag}", f"{SUBNET}.1"), (f"cnn-node-b-{tag}", f"cnnvb{tag}", f"{SUBNET}.2")]
    try:
        for namespace, _, _ in nodes:
            ip("netns", "add", namespace)
        ip("link", "add", nodes[0][1], "type", "veth", "peer", "name", nodes[1][1])
        for namespace, interface, address in nodes:
            ip("link", "set", interface, "netns", namespace)
            ip("-n", namespace, "addr", "add", f"{address}/24", "dev", interface)
            ip("-n", namespace, "link", "set", interface, "up")
            ip("-n", namespace, "link", "set", "lo", "up")
        yield nodes
    finally:
        for namespace, _, _ in nodes:  # deleting a namespace deletes its end of the pair, and so the pair
            ip("netns", "delete", namespace, check=False)


def node_command(namespace: str, interface: str, address: str, is_host: bool, program: list[str],
                 train: list[str]) -> list[str]:
    # Both namespaces share this machine's hostname, which resolves to neither end of the link, so
    # each node names its own address: --local-addr (advertised to the other node as the store's
    # address when it holds rank 0), GLOO_SOCKET_IFNAME (the interface gloo connects through), and
    # is_host (which node serves the rendezvous; c10d guesses it from the hostname otherwise).
    return ["ip", "netns", "exec", namespace, "env", f"GLOO_SOCKET_IFNAME={interface}", "OMP_NUM_THREADS=1",
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{SUBNET}.1:{RENDEZVOUS_PORT}", "--rdzv-id",
            f"two-nodes-{os.getpid()}", "--rdzv-conf", f"is_host={int(is_host)}", "--local-addr", address,
            "--max-restarts", "0", *program, *train]


def train_arguments(model_dir: Path, data_dir: str | None, steps: int) -> list[str]:
    return ["train", "--model-dir", str(model_dir), "--steps", str(steps), *TRAIN,
            *(["--data-dir", data_dir] if data_dir else [])]


def run_two_nodes(work: Path, program: list[str], data_dir: str | None, steps: int, timeout_s: float) -> dict:
    with two_linked_namespaces() as nodes:
        started = time.perf_counter()
        processes = [subprocess.Popen(node_command(namespace, interface, address, index == 0, program,
                                                   train_arguments(work / f"node_{'ab'[index]}", data_dir, steps)),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for index, (namespace, interface, address) in enumerate(nodes)]
        try:
            outputs = [process.communicate(timeout=timeout_s) for process in processes]
        except subprocess.TimeoutExpired:
            for process in processes:  # SIGTERM: each torchrun stops its workers before it exits
                process.terminate()
            outputs = [process.communicate(timeout=60) for process in processes]
            raise RuntimeError(f"the nodes took over {timeout_s:.0f} s; their logs end:\n"
                               + "\n".join(err[-3000:] for _, err in outputs)) from None
        seconds = time.perf_counter() - started
    for process, (name, _, _), (_, err) in zip(processes, nodes, outputs, strict=True):
        if process.returncode != 0:
            raise RuntimeError(f"node {name} failed (exit {process.returncode}):\n{err[-6000:]}")
    printed = [(name, out) for (name, _, _), (out, _) in zip(nodes, outputs, strict=True) if out.strip()]
    if len(printed) != 1:
        raise RuntimeError(f"expected one node (rank 0's) to print the results, got {len(printed)}")
    with_files = [letter for letter in "ab" if list_checkpoints(work / f"node_{letter}")]
    empty = [letter for letter in "ab" if not (work / f"node_{letter}").exists()]
    return {"results": json.loads(printed[0][1].strip().splitlines()[-1]), "rank_0_node": with_files,
            "rank_0_model_dir_only": len(with_files) == 1 and len(empty) == 1,
            "model_dir": work / f"node_{with_files[0]}" if with_files else None, "seconds": seconds}


def run_one_process(work: Path, program: list[str], data_dir: str | None, steps: int, timeout_s: float) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *program, *train_arguments(work / "one", data_dir, steps)],
                          capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"the one-process run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return {"results": json.loads(done.stdout.strip().splitlines()[-1]), "model_dir": work / "one",
            "seconds": time.perf_counter() - started}


def newest_weights(model_dir: Path) -> dict:
    return load_checkpoint(list_checkpoints(model_dir)[-1][1])["network"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--data-dir", help="MNIST directory (default: the package's cache)")
    parser.add_argument("--program", help="a Python file to run instead of `-m cnn_mnist` (the tests' wrapper)")
    parser.add_argument("--timeout-s", type=float, default=600)
    args = parser.parse_args(argv)
    reason = namespaces_unavailable()
    if reason:
        print(f"two_nodes: cannot run here: {reason}", file=sys.stderr)
        return 2
    program = [args.program] if args.program else ["-m", "cnn_mnist"]
    with tempfile.TemporaryDirectory() as work:
        nodes = run_two_nodes(Path(work), program, args.data_dir, args.steps, args.timeout_s)
        one = run_one_process(Path(work), program, args.data_dir, args.steps, args.timeout_s)
        ours, theirs = newest_weights(nodes["model_dir"]), newest_weights(one["model_dir"])
        difference = max((ours[name] - theirs[name]).abs().max().item() for name in theirs)
    report = {
        "global_step": nodes["results"]["global_step"], "max_weight_difference": difference,
        "accuracy": {"two_nodes": nodes["results"]["accuracy"], "one": one["results"]["accuracy"]},
        "loss": {"two_nodes": nodes["results"]["loss"], "one": one["results"]["loss"]},
        "rank_0_node": nodes["rank_0_node"], "rank_0_model_dir_only": nodes["rank_0_model_dir_only"],
        "seconds": {"two_nodes": round(nodes["seconds"], 1), "one": round(one["seconds"], 1)},
    }
    ok = (difference < 1e-5 and report["accuracy"]["two_nodes"] == report["accuracy"]["one"]
          and report["global_step"] == args.steps and report["rank_0_model_dir_only"])
    print(f"{'':<28} {'two nodes':>12} {'one process':>12}")
    print(f"{'test accuracy':<28} {report['accuracy']['two_nodes']:>12.6f} {report['accuracy']['one']:>12.6f}")
    print(f"{'test loss':<28} {report['loss']['two_nodes']:>12.6f} {report['loss']['one']:>12.6f}")
    print(f"{'seconds (whole command)':<28} {report['seconds']['two_nodes']:>12} {report['seconds']['one']:>12}")
    print(f"max |weight difference| after {report['global_step']} steps: {difference:.3g}; rank 0 ran on node "
          f"{''.join(report['rank_0_node'])}, and only its model directory was written")
    print(json.dumps({"benchmark": "two_nodes", "ok": ok, **report}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
