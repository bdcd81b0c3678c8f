"""tf-cme: a TensorFlow/Keras port of "Emotion Recognition in Speech using
Cross-Modal Transfer in the Wild" (Albanie et al., ACM MM 2018).

Exact tested versions live in constraints.txt (TensorFlow 2.17.1, the default) and
constraints-tf221.txt (TensorFlow 2.21.0); the Makefile installs with them.
"""
from setuptools import find_packages, setup

CORE = [
    # Tested on TF 2.17.1 (constraints.txt) and 2.21.0 (constraints-tf221.txt).
    # The full wheel, not tensorflow-cpu: tensorflow-serving-api requires `tensorflow`,
    # so with tensorflow-cpu a second TensorFlow would be installed over the first.
    "tensorflow>=2.17.1,<2.22",
    "keras>=3.15.1,<3.16",
    "tensorboard>=2.17,<2.22",
    "numpy==1.26.4",
    "scipy",
    "scikit-learn",
    "matplotlib",
    "pillow",
    "tqdm",
    "google-crc32c",              # TFRecord CRC-32C in C: shards written and verified without TF
    "opencv-python-headless<5",   # 5.x dropped the Haar cascades
    # FLAC, Ogg Vorbis/Opus, MP3: the wheels bundle libsndfile (1.2.2 in 0.13+; MP3 from 1.1)
    "soundfile>=0.12",
    "av",                         # PyAV: video and compressed audio containers, fallback decoder
    "mtcnn",                      # aligned faces; weights ship inside the wheel
]
# tensorflow-io adds nothing the core needs (soundfile and PyAV decode every format it
# reads); the extra keeps load_audio(backend="tfio") as a cross-check. Its native ops are
# built for TF 2.17 only (its last release), so install it only with TF 2.17.
TFIO = ["tensorflow-io==0.37.1"]
# tensorflow-serving-api pins tensorflow to its own minor version: 2.17.x with TF 2.17,
# 2.21.x with TF 2.21 (the constraints files pick the pair).
SERVING = ["tensorflow-serving-api>=2.17,<2.22", "grpcio"]
BENCH = ["torch==2.13.0"]         # benchmark peers only; never a core dependency
# jax: the student's front end and network are checked on Keras's JAX backend too
# LiteRT runs the exported .tflite files without TensorFlow (serving/tflite.py)
TFLITE = ["ai-edge-litert==2.3.0"]
TEST = ["pytest", "hypothesis", "h5py", "jax[cpu]"] + SERVING + TFLITE

setup(
    name="tf-cme",
    version="0.1.0",
    description="Cross-modal emotion distillation (face teacher -> speech student) in TensorFlow/Keras",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tf_cme", "tf_cme.*"]),
    python_requires=">=3.11,<3.12",
    install_requires=CORE,
    extras_require={"serving": SERVING, "bench": BENCH, "test": TEST, "tfio": TFIO,
                    "tflite": TFLITE},
    include_package_data=True,
    license="MIT",
    # one command, a subcommand per stage (tf_cme/cli.py): `tf-cme --help` lists them
    entry_points={"console_scripts": ["tf-cme = tf_cme.cli:main"]},
)
