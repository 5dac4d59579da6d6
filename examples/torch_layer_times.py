"""Where a training step of a book VAE's PyTorch twin spends its time, convolution by convolution:
torch.profiler's CPU time of each aten::convolution and aten::convolution_backward, grouped by the
layer's shapes, per step. Set beside `python -m minivae profile`, which times minivae's own layers,
it shows which layers PyTorch runs faster and which slower. Needs PyTorch; MNIST's training images
where the cache has them (as `minivae bench` finds them), else random ones (--synthetic).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=2 \\
        python examples/torch_layer_times.py --model chollet --batch-size 16

(The profiler adds its own time to each op: compare layers with layers, and the step with the
profiler off, which this prints first, with `minivae bench`.)
"""
import argparse
import os
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch_reference import torch_twin

from minivae import bench, rng
from minivae.train import TrainConfig, build

OPS = {"aten::convolution": "forward", "aten::convolution_backward": "backward"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="chollet")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="steps timed, and as many profiled")
    parser.add_argument("--synthetic", action="store_true", help="random images instead of MNIST")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0))))
    net = build(TrainConfig(model=args.model, batch_size=args.batch_size).resolved())[0]
    twin, loss_fn, optimizer = torch_twin(args.model, net)
    images = bench.training_images(args.batch_size, synthetic=args.synthetic, image_shape=net.input_shape)
    order = rng.generator("bench").permutation(len(images))
    batches = [torch.tensor(images[order[i * args.batch_size:(i + 1) * args.batch_size]])
               for i in range(min(2 * args.steps + 10, len(images) // args.batch_size))]

    def step(i):
        optimizer.zero_grad()
        x = batches[i % len(batches)]
        loss_fn(x, *twin(x)).backward()
        optimizer.step()

    for i in range(10):
        step(i)
    seconds = []
    for i in range(args.steps):
        start = time.perf_counter()
        step(i)
        seconds.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        for i in range(args.steps):
            step(i)
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, {args.model} batch {args.batch_size}, "
          f"{bench.cpu_model()}, {bench.machine()['date']}: a step {1000 * statistics.median(seconds):.2f} ms "
          f"(median of {args.steps}, profiler off)")
    rows = {}  # (x shape, w shape): an aten::convolution's input and weight; a backward's are its 2nd and 3rd
    for event in profiler.key_averages(group_by_input_shape=True):
        if event.key in OPS:
            shapes = event.input_shapes[:2] if event.key == "aten::convolution" else event.input_shapes[1:3]
            row = rows.setdefault(tuple(tuple(s) for s in shapes), {"forward": 0.0, "backward": 0.0, "layers": 0})
            row[OPS[event.key]] += event.cpu_time_total / args.steps / 1000   # a key may come in several events
            if event.key == "aten::convolution":
                row["layers"] += event.count // args.steps
    print(f"{'x':20s} {'w':18s} {'layers':>6s} {'fwd ms':>7s} {'bwd ms':>7s}  (per step, for all such layers)")
    for (x, w), row in rows.items():
        print(f"{str(x):20s} {str(w):18s} {row['layers']:6d} {row['forward']:7.2f} {row['backward']:7.2f}")


if __name__ == "__main__":
    main()
