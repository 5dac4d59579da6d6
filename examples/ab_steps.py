"""Two versions of the code in one process, taking turns: the median ratio of their training steps.

On a noisy machine two runs minutes apart differ by more than most changes gain. Here one model
is built once, and rounds alternate between two settings (each a Python statement run before its
round: a switch between the old and the new code, a thread count, a module attribute), so that
both meet the machine in the same minutes. Each round runs 3 warm-up and --steps timed steps on
one batch of random images and keeps their median; the figure is the median over rounds of
B's step ÷ A's step (below 1: B is faster).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python examples/ab_steps.py --model chollet \\
        --batch-size 16 --rounds 10 'winograd.settings["enabled"] = False' 'winograd.settings["enabled"] = True'

The statements run with `minivae`, `winograd` (minivae.functional.winograd) and `threads`
imported.
"""
import argparse
import statistics
import time

import numpy as np

import minivae
from minivae import threads  # noqa: F401 - for the statements
from minivae.functional import winograd  # noqa: F401 - for the statements
from minivae.train import TrainConfig, build, to_tensor


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="the statement that sets up side A")
    parser.add_argument("b", help="the statement that sets up side B")
    parser.add_argument("--model", default="chollet")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=8, help="rounds of each side")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per round")
    args = parser.parse_args()
    net, optimizer, loss_fn = build(TrainConfig(model=args.model, batch_size=args.batch_size).resolved())
    x = np.random.default_rng(0).random((args.batch_size,) + tuple(net.input_shape), dtype=np.float32)

    def step():
        images = to_tensor(x, "cpu")
        loss, _, _ = loss_fn(images, *net(images))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    medians = {"a": [], "b": []}
    for r in range(args.rounds):
        for side in ("a", "b") if r % 2 == 0 else ("b", "a"):
            exec(getattr(args, side), {"minivae": minivae, "winograd": winograd, "threads": threads})
            for _ in range(3):
                step()
            seconds = []
            for _ in range(args.steps):
                start = time.perf_counter()
                step()
                seconds.append(time.perf_counter() - start)
            medians[side].append(statistics.median(seconds))
    ratios = [b / a for a, b in zip(medians["a"], medians["b"])]
    print(f"{args.model} {args.batch_size}: A {1000 * statistics.median(medians['a']):.2f} ms, "
          f"B {1000 * statistics.median(medians['b']):.2f} ms a step; B/A {statistics.median(ratios):.3f} "
          f"(median of {args.rounds} rounds, {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
