"""Installation for kerasbd: a Keras 3 toolkit that finds and removes backdoors in image classifiers."""
from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="kerasbd",
    version="0.1.0",
    description="Find and remove backdoors (trojans, BadNets) in Keras image classifiers.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # The zoo manifests live in the top-level pretrained/ folder and ship inside the package as kerasbd._pretrained.
    packages=find_packages(include=["kerasbd", "kerasbd.*"]) + ["kerasbd._pretrained"],
    package_dir={"kerasbd._pretrained": "pretrained"},
    package_data={"kerasbd": ["py.typed"], "kerasbd.scan": ["calibration.json"], "kerasbd._pretrained": ["*.json"]},
    install_requires=[
        "tensorflow>=2.21,<2.22",
        # The lowest Keras the safe loader (kerasbd.models.safety, tests/test_security.py) has been tested on: the
        # allow-list mirrors how this Keras resolves modules, classes and registered names.
        "keras>=3.15.1,<3.16",
        "numpy>=2.0",
        "opencv-python-headless>=4.9",
        "h5py>=3.10",
        "scikit-learn>=1.4",
        "matplotlib>=3.8",
        # progress bars with a time-left estimate (kerasbd.io.Progress); maintained, no dependencies of its own
        "tqdm>=4.66",
    ],
    extras_require={
        # Ray runs `kerasbd scan` over many models (one task per model); heavy, so optional. A single scan needs none.
        "scan": ["ray>=2.40"],
        "test": ["pytest>=8", "albumentations>=2.0", "ruff==0.17.6", "mypy==2.4.1", "ray>=2.40"],
    },
    entry_points={"console_scripts": ["kerasbd=kerasbd.cli:main"]},
)
