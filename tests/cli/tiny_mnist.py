"""A tiny MNIST-shaped data set in IDX files: class k images are bright in
row band k (trivially separable), with noise. Usage: tiny_mnist.py DIR
[N_TRAIN N_TEST]; writes train-images-idx3-ubyte.gz, train-labels-idx1-ubyte,
t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte."""
import gzip
import os
import random
import struct
import sys


def write(d, split, n):
    labels = [i % 10 for i in range(n)]
    pix = bytearray()
    for k in labels:
        for r in range(28):
            for c in range(28):
                v = 200 if 2 * k <= r < 2 * k + 3 else 0
                pix.append(min(255, v + random.randrange(40)))
    with gzip.open(os.path.join(d, f"{split}-images-idx3-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, 28, 28) + bytes(pix))
    with open(os.path.join(d, f"{split}-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 2049, n) + bytes(labels))


def main():
    d = sys.argv[1]
    n_train = int(sys.argv[2]) if len(sys.argv) > 2 else 320
    n_test = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    os.makedirs(d)
    random.seed(0)
    write(d, "train", n_train)
    write(d, "t10k", n_test)


main()
