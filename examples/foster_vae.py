"""Generative Deep Learning (Foster), ch. 3: the variational autoencoder on MNIST.

The book's configurable VariationalAutoencoder, trained with 1000·MSE + KL and Adam (lr 5e-4,
batch 32), then its pictures: reconstructions, samples from the prior, the latent scatter.
Run: python examples/foster_vae.py --epochs 1 [--steps 200] [--out runs/foster_example]
"""
import argparse

import minivae
from minivae import data, optim, pictures
from minivae.models import VariationalAutoencoder, foster_loss

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--steps", type=int, default=0, help="stop each epoch after this many steps")
parser.add_argument("--out", default="runs/foster_example")
args = parser.parse_args()

minivae.manual_seed(0)
vae = VariationalAutoencoder(
    input_shape=(1, 28, 28),
    encoder_conv_filters=[32, 64, 64, 64], encoder_conv_kernel_size=[3, 3, 3, 3],
    encoder_conv_strides=[1, 2, 2, 1],
    decoder_conv_filters=[64, 64, 32, 1], decoder_conv_kernel_size=[3, 3, 3, 3],
    decoder_conv_strides=[1, 2, 2, 1],
    z_dim=2)
vae.summary((1, 28, 28))

train_x, _ = data.load_mnist("train")
test_x, test_y = data.load_mnist("test")
optimizer = optim.Adam(vae.parameters(), lr=5e-4)
schedule = optim.StepDecay(5e-4, decay=1.0, step_size=1)  # the book's step decay; 1.0 = constant

for epoch in range(args.epochs):
    optimizer.lr = schedule(epoch)
    for step, x in enumerate(data.batches(train_x, 32)):
        if args.steps and step == args.steps:
            break
        x = minivae.Tensor(x)
        reconstruction, mu, log_var = vae(x)
        loss, recon, kl = foster_loss(x, reconstruction, mu, log_var)  # 1000·MSE + KL
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            print(f"epoch {epoch + 1} step {step}: loss {loss.item():.2f} "
                  f"(reconstruction {recon.item():.2f}, KL {kl.item():.2f})")

    with minivae.no_grad():
        vae.eval()
        x = minivae.Tensor(test_x[:1000])
        loss, recon, kl = foster_loss(x, *vae(x))
        vae.train()
    print(f"epoch {epoch + 1}: test loss on 1000 images {loss.item():.2f}")

print("pictures:", *pictures.write_pictures(vae, test_x, test_y, [], args.out), sep="\n  ")
