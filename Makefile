# ltpll: the two set-up commands are `make install` (then `make test`) and `make train`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ltpll
SHARED_CIFAR ?= ../shared/data/cifar10-jpg.tar.gz
# CIFAR-10 for `make train`: tensorflow-datasets' copy (downloaded on first use); offline
# machines here point it at the shared image-folder tarball instead: make train DATASET=$(SHARED_CIFAR)
DATASET ?= cifar10
EPOCHS ?= 800
OUTPUT ?= runs/c10-lt-corr-records

.PHONY: install test test-all train demo bench-augment bench-grid-cpu bench-peers-cpu bench-step-cpu \
	bench-reweight-cpu bench-scale-cpu paper-c10 crosscheck-official \
	bench-vs-official-cpu clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[jax,plots,test]"

test: install
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q tests

# Also the slow checks (MirroredStrategy equivalence over more steps, real CIFAR-10 loading).
test-all: install
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q tests --runslow

# The main job: CORR + RECORDS on CIFAR-10-LT (rho=100, q=0.3), the paper's settings. Needs a GPU
# for the full 800 epochs (a CPU trains ResNet-18 at ~25 images/s).
train: install
	$(BIN)/ltpll train --dataset $(DATASET) --imbalance-ratio 100 --partial-rate 0.3 \
		--method corr --records --backbone resnet18 --epochs $(EPOCHS) --batch-size 256 \
		--lr 0.01 --weight-decay 1e-3 --cosine --seed 123 --output $(OUTPUT)

# The same flow offline in about two minutes on a CPU, on the CIFAR-10 sample inside the package.
demo: install
	rm -rf runs/demo
	$(BIN)/ltpll train --dataset sample --imbalance-ratio 10 --partial-rate 0.3 --method corr \
		--records --backbone resnet-small --epochs 15 --batch-size 64 --lr 0.05 \
		--weight-decay 5e-4 --eval-every 5 --seed 123 --output runs/demo
	$(BIN)/ltpll evaluate runs/demo

# The paper's comparison grid, scaled to finish in under an hour on a 2-core CPU: resnet-small on
# the shared CIFAR-10-LT copy (rho=100, n_max=500: 1240 training images), q in {0.3, 0.5}, four PLL
# methods x {none, oracle-la, oracle-la-posthoc, records}, one seed, 16 epochs. Resumable: run it
# again after an interruption. Tables and plots land in $(BENCH_OUTPUT).
BENCH_OUTPUT ?= runs/bench-grid-cpu
bench-grid-cpu: install
	$(BIN)/ltpll benchmark --dataset $(SHARED_CIFAR) --imbalance-ratios 100 --max-per-class 500 \
		--partial-rates 0.3,0.5 --methods corr,proden,lw,cavl \
		--rebalancers none,oracle-la,oracle-la-posthoc,records --seeds 1 \
		--backbone resnet-small --epochs 16 --batch-size 64 --lr 0.05 --weight-decay 5e-4 \
		--eval-every 16 --output $(BENCH_OUTPUT)

# The published LT-PLL methods side by side on bench-grid-cpu's proxy (resnet-small, the shared
# CIFAR-10-LT copy, rho=100, n_max=500, q in {0.3, 0.5}, one seed, 16 epochs): CORR, CORR+RECORDS,
# SoLar, SoLar-LA, HTC, CC, CC+RECORDS. 10% of the training set is held out as a partial-label
# validation split, and the test set is evaluated every PEERS_EVAL_EVERY epochs, so the tables
# give the last epoch, the best test epoch (optimistic) and the label-free selections. SoLar's
# schedule is scaled from its authors' 1000 CIFAR epochs (warm-up 50) to 16, its queue to about
# the training set, and its marginal estimation so that it converges as far as theirs does
# (their 20 epochs at gamma 0.1 move the estimate 1 - 0.9^20 = 88% of the way; 4 at 0.4: 87%;
# 2 at 0.1, the first proxy, only 19%, leaving SoLar pulled towards a near-uniform marginal);
# HTC's warm-up from its authors' 50 of 800 epochs to 1.
# About 46 minutes on an idle 2-core CPU (measured per cell:
# CORR 2.8 min, CC 2.6, SoLar 4.7; HTC taken as CORR); PEERS_EVAL_EVERY=2 adds about 8. Resumable.
# Tables in $(PEERS_OUTPUT)/results.md; PEERS_PAIRS picks a subset (PEERS_PAIRS=cc:none,cc:records).
PEERS_OUTPUT ?= runs/bench-peers-cpu
PEERS_PAIRS ?= corr:none,corr:records,solar:none,solar-la:none,htc:none,cc:none,cc:records
PEERS_EVAL_EVERY ?= 4
bench-peers-cpu: install
	$(BIN)/ltpll benchmark --dataset $(SHARED_CIFAR) --imbalance-ratios 100 --max-per-class 500 \
		--partial-rates 0.3,0.5 --pairs $(PEERS_PAIRS) --seeds 1 \
		--backbone resnet-small --epochs 16 --batch-size 64 --lr 0.05 --weight-decay 5e-4 \
		--eval-every $(PEERS_EVAL_EVERY) --val-fraction 0.1 --solar-queue-size 1024 \
		--solar-warmup-epochs 1 --solar-est-epochs 4 --solar-gamma-est 0.4 --htc-warmup-epochs 1 \
		--output $(PEERS_OUTPUT)

# Reweighting and better representations on the same CIFAR-10-LT set as bench-grid-cpu (rho=100,
# n_max=500, q=0.3, resnet-small, one seed), trained 40 epochs: CORR, +RECORDS, +CB, +LDAM-DRW,
# +meta-weights, +RECORDS from a rotation-SSP backbone, +RECORDS with pseudo-labelled unused
# CIFAR-10 images, and two CB controls. Resumable. Table in $(REWEIGHT_OUTPUT)/results.md.
REWEIGHT_OUTPUT ?= runs/bench-reweight-cpu
bench-reweight-cpu: install
	KERAS_BACKEND=tensorflow $(BIN)/python benchmarks/bench_reweight.py --dataset $(SHARED_CIFAR) \
		--output $(REWEIGHT_OUTPUT) --epochs 40 --pretrain-epochs 30

# Images/s of the full CORR+RECORDS step vs the bare backbone, on this CPU (small backbone).
bench-step-cpu: install
	$(BIN)/ltpll bench-step --backbone resnet-small --batch-size 128 --steps 20 --precision float32
	$(BIN)/ltpll bench-step --backbone resnet-small --batch-size 128 --steps 20 --precision mixed_bfloat16

# Large-dataset checks on this CPU (7 to 9 minutes on 2 cores): ~5,000 ImageNet-like JPEGs
# generated once under $(CACHE)/bench-scale, input-pipeline images/s at 224 px (streamed tf.data,
# image_dataset_from_directory, random-resized crop in the pipeline vs on device, Pillow
# PyDataset), peak RSS of streamed vs in-memory `ltpll train` on 1,000 vs 5,000 images, and the
# ResNet-50 step. Tables in $(SCALE_OUTPUT)/results.md. Quicker: SCALE_FLAGS="--skip-train".
SCALE_OUTPUT ?= runs/bench-scale-cpu
SCALE_FLAGS ?=
bench-scale-cpu: install
	KERAS_BACKEND=tensorflow $(BIN)/python benchmarks/bench_scale.py --output $(SCALE_OUTPUT) \
		$(SCALE_FLAGS)

# The paper's CIFAR-10-LT comparison (rho=100, q in {0.3, 0.5}; CORR vs CORR+RECORDS, ResNet-18,
# 800 epochs, bf16) as one resumable grid: run on a GPU machine. On a machine with JAX and no
# TensorFlow: KERAS_BACKEND=jax make paper-c10 DATASET=path/to/cifar10-folder-or-tarball
PAPER_OUTPUT ?= runs/paper-c10
paper-c10:
	$(BIN)/ltpll benchmark --dataset $(DATASET) --imbalance-ratios 100 --partial-rates 0.3,0.5 \
		--methods corr --rebalancers none,records --seeds 123 --backbone resnet18 \
		--epochs $(EPOCHS) --batch-size 256 --lr 0.01 --weight-decay 1e-3 --precision mixed_bfloat16 \
		--eval-every 50 --output $(PAPER_OUTPUT)

# A virtual environment with torch for the harnesses that run the RECORDS authors' code
# (benchmarks/official/), outside the repository and made once; never part of `make test`.
TORCH_VENV ?= $(CACHE)/torch-venv
$(TORCH_VENV)/bin/python:
	$(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1 numpy

# ltpll's CORR + RECORDS step against the authors' CORR_loss_RECORDS and ResNet-18 from their
# checkout (OFFICIAL=path/to/RECORDS-LTPLL): the same initial weights, CIFAR-10 batches,
# candidate sets and SGD steps (float32, CPU); prints the largest differences. A few minutes.
CROSSCHECK_FLAGS ?=
ifneq ($(filter crosscheck-official,$(MAKECMDGOALS)),)
ifeq ($(strip $(OFFICIAL)),)
$(error give the authors' checkout: make crosscheck-official OFFICIAL=path/to/RECORDS-LTPLL)
endif
endif
crosscheck-official: install $(TORCH_VENV)/bin/python
	KERAS_BACKEND=tensorflow $(BIN)/python benchmarks/official/crosscheck.py \
		--official $(OFFICIAL) --torch-python $(TORCH_VENV)/bin/python \
		--dataset $(SHARED_CIFAR) $(CROSSCHECK_FLAGS)

# Training-step speed of ltpll next to the authors' code (OFFICIAL=path/to/RECORDS-LTPLL) on
# this CPU: CORR + RECORDS, ResNet-18, batch 64, on the same 3,000 shared CIFAR-10 images; a real
# `ltpll train` run against their train() loop (their ResNet-18, CORR_loss_RECORDS, PIL
# RandAugment DataLoader with 2 workers), 3 back-to-back pairs of 12 timed steps after 3 warm-up.
# About 10 minutes on an idle 2-core CPU. More: VS_OFFICIAL_FLAGS="--batch-size 256 --rounds 5"
# or "--backbone resnet-small"; TORCH_VENV=path picks a venv with torch that is already there.
VS_OFFICIAL_FLAGS ?=
ifneq ($(filter bench-vs-official-cpu,$(MAKECMDGOALS)),)
ifeq ($(strip $(OFFICIAL)),)
$(error give the authors' checkout: make bench-vs-official-cpu OFFICIAL=path/to/RECORDS-LTPLL)
endif
endif
bench-vs-official-cpu: install $(TORCH_VENV)/bin/python
	KERAS_BACKEND=tensorflow $(BIN)/python benchmarks/official/bench_vs_official.py \
		--official $(OFFICIAL) --torch-python $(TORCH_VENV)/bin/python \
		--dataset $(SHARED_CIFAR) --cache $(CACHE) $(VS_OFFICIAL_FLAGS)

bench-augment: install
	$(BIN)/python benchmarks/bench_augment.py

clean:
	rm -rf runs .pytest_cache
