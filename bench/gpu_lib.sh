# Shared by bench/gpu_*.sh (sourced after `cd` to the repository root, with NAME, W, PY, HARD_S, DEVICE and IDX set):
# elapsed time, logging into $W/script.log, the seconds left to the hard stop, the device line and the data.
start=$(date +%s)
[ -n "${OUT:-}" ] && mkdir -p "$OUT"
el() { echo $(( $(date +%s) - start )); }
log() { echo "[$NAME $(el)s] $*" | tee -a "$W/script.log" >&2; }
dsm() { $PY -m dsmctl "$@"; }
left() { echo $(( HARD_S - $(el) > 1 ? HARD_S - $(el) : 1 )); }  # seconds to the hard stop
nll() { $PY -c "import json,sys; n=json.load(open(sys.argv[1]))['nll']; print(f\"{n['bits_per_dim']:.4f} +- {n['bits_per_dim_stderr']:.4f} bits/dim ({n['n_images']} images)\")" "$1"; }
prepare_fashion() {  # log the device, hide the GPU when DEVICE=cpu, prepare Fashion-MNIST from $IDX into $W/data
    log "device ${DEVICE:-cuda}; $($PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no cuda")')"
    [[ ${DEVICE:-cuda} == cpu ]] && export CUDA_VISIBLE_DEVICES=""
    dsm prepare "fashion-mnist:$IDX" --out "$W/data" 2> "$W/prepare.log" || { log "prepare failed"; cat "$W/prepare.log" >&2; exit 1; }
}
