"""Deep Learning with Python (Chollet), §8.4: generating images with a VAE.

The book's model written out layer by layer with minivae.nn (ReLU convs, Dense 32, a 2-D
latent; ConvTranspose + Conv decoder), trained with BCE + 5e-4·KL and RMSprop (batch 16),
then the book's figure: a 15×15 grid of digits decoded over the latent plane.
Run: python examples/chollet_vae.py --epochs 1 [--steps 500] [--out runs/chollet_example]
"""
import argparse

import minivae
from minivae import data, nn, optim, plots
from minivae.models import VAE, chollet_loss
from minivae.tensor import Tensor

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--steps", type=int, default=0, help="stop each epoch after this many steps")
parser.add_argument("--out", default="runs/chollet_example")
args = parser.parse_args()

minivae.manual_seed(0)
encoder = nn.Sequential(
    conv_0=nn.Conv2d(1, 32, 3), relu_0=nn.ReLU(),
    conv_1=nn.Conv2d(32, 64, 3, stride=2), relu_1=nn.ReLU(),
    conv_2=nn.Conv2d(64, 64, 3), relu_2=nn.ReLU(),
    conv_3=nn.Conv2d(64, 64, 3), relu_3=nn.ReLU(),
    flatten=nn.Flatten(), dense=nn.Dense(14 * 14 * 64, 32), relu_dense=nn.ReLU())
decoder = nn.Sequential(
    dense=nn.Dense(2, 14 * 14 * 64), relu=nn.ReLU(), reshape=nn.Reshape(64, 14, 14),
    conv_t=nn.ConvTranspose2d(64, 32, 3, stride=2), relu_t=nn.ReLU(),
    conv_out=nn.Conv2d(32, 1, 3), sigmoid=nn.Sigmoid())
vae = VAE(encoder, features=32, z_dim=2, decoder=decoder)  # z_mean, z_log_var heads + Sampling
vae.summary((1, 28, 28))

train_x, _ = data.load_mnist("train")
optimizer = optim.RMSprop(vae.parameters(), lr=1e-3)

for epoch in range(args.epochs):
    for step, x in enumerate(data.batches(train_x, 16)):
        if args.steps and step == args.steps:
            break
        x = Tensor(x)
        loss, recon, kl = chollet_loss(x, *vae(x))  # BCE + 5e-4 · KL term
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 250 == 0:
            print(f"epoch {epoch + 1} step {step}: loss {loss.item():.4f}")

vae.eval()
with minivae.no_grad():
    path = plots.save_manifold(lambda z: vae.decode(Tensor(z)).data, f"{args.out}/manifold.png")
print("the book's figure:", path)
