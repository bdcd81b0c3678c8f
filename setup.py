"""tf-cme: a TensorFlow/Keras port of "Emotion Recognition in Speech using
Cross-Modal Transfer in the Wild" (Albanie et al., ACM MM 2018).

Exact tested versions live in constraints.txt; the Makefile installs with it.
"""
from setuptools import find_packages, setup

CORE = [
    # The full wheel, not tensorflow-cpu: with tensorflow-cpu, tensorflow-serving-api
    # pulls in a second TensorFlow and breaks tensorflow-io.
    "tensorflow==2.17.1",
    "keras==3.15.1",
    # Native ops built against TF 2.17: the reason TF is pinned there. Offline stages only.
    "tensorflow-io==0.37.1",
    "tensorboard>=2.17,<2.18",
    # tensorboard 2.17's command line imports pkg_resources, which setuptools 81+ removed.
    "setuptools<81",
    "numpy==1.26.4",
    "scipy",
    "scikit-learn",
    "matplotlib",
    "pillow",
    "tqdm",
    "google-crc32c",              # TFRecord CRC-32C in C: shards written and verified without TF
    "opencv-python-headless<5",   # 5.x dropped the Haar cascades
    "av",                         # PyAV: video and compressed audio containers
    "mtcnn",                      # aligned faces; weights ship inside the wheel
]
SERVING = ["tensorflow-serving-api>=2.17,<2.18", "grpcio"]
BENCH = ["torch==2.13.0"]         # benchmark peers only; never a core dependency
# jax: the student's front end and network are checked on Keras's JAX backend too
TEST = ["pytest", "hypothesis", "soundfile", "h5py", "jax[cpu]"] + SERVING

setup(
    name="tf-cme",
    version="0.1.0",
    description="Cross-modal emotion distillation (face teacher -> speech student) in TensorFlow/Keras",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tf_cme", "tf_cme.*"]),
    python_requires=">=3.11,<3.12",
    install_requires=CORE,
    extras_require={"serving": SERVING, "bench": BENCH, "test": TEST},
    include_package_data=True,
    license="MIT",
)
