"""Every file name mergekit-awd writes or looks for: one home for each."""

# A merge's output folder (each method names its report: ``PackageMergeMethod.report_filename``)
COMPLETION_MARKER = "mergekit_awd_complete.json"  # the last file a merge writes (with digests)
CARD_FILENAME = "README.md"  # mergekit's model card, extended
CARD_HEATMAP = "awd_cosines.png"  # the card's cosine heatmap

# inspect --out
INSPECT_REPORT = "inspect_report.json"
INSPECT_COSINES_PNG = "inspect_cosines.png"
INSPECT_LAYERS_PNG = "inspect_layers.png"

# compress OUT
COMPRESS_REPORT = "compress_report.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_PICKLE_WEIGHTS = "adapter_model.bin"

# Model folders (read)
MODEL_CONFIG = "config.json"
SAFETENSORS_WEIGHTS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
INDEX_SUFFIX = ".index.json"

# tune --out (and the tuned configuration beside CONFIG)
TUNE_POINTS = "tune_points.jsonl"  # the score cache (one scored point a line)
TUNE_REPORT = "tune_report.json"
TUNE_TABLE = "tune.md"
TUNE_PLOT = "tune_scores.png"
TUNE_LAYERWISE_PLOT = "tune_layerwise.png"  # --layerwise: the learned coefficients per group and model
TUNE_LAYERWISE_CHECKPOINT = "layerwise_checkpoint.pt"  # --layerwise: a killed layer-wise tuning resumes from it
TUNE_METHODS_REPORT = "tune_methods.json"  # --methods: every method's choice and score, the winner
TUNE_METHODS_TABLE = "tune_methods.md"
TUNE_SCRATCH = ".tune-scratch"  # the tuning merges; removed when tune ends, and at the next tune's start
TUNED_SUFFIX = ".tuned.yml"  # CONFIG.tuned.yml beside CONFIG
