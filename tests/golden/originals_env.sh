#!/usr/bin/env bash
# Make the throwaway Python environment that runs the original systems' code for the golden
# fixtures (tests/golden/make_fixtures.py). It sees snngen's environment (torch, numpy, ...) and
# adds, without their dependencies, what the originals import:
#   snntorch 1.0          - the snnTorch SAE tutorial
#   spikingjelly 0.0.0.0.14 - SDDPM / SDM's spiking U-Net (the version their code was written for)
#   braincog 0.2.7.19, einops - tts_vqvae (its LIF node, its transformer)
# and stubs for torchvision & co. (original_stubs.py), imported but never used by the builders.
# Nothing of this is needed to run the tests: CI only loads the committed fixtures.
#
#   bash tests/golden/originals_env.sh [/tmp/snngen-originals]
#   SNNGEN_ORIGINALS=/work/.mirror /tmp/snngen-originals/bin/python tests/golden/make_fixtures.py --check
set -euo pipefail
venv="${1:-/tmp/snngen-originals}"
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv --system-site-packages "$venv"
"$venv/bin/pip" install -q --no-deps "snntorch==1.0.*" "spikingjelly==0.0.0.0.14" \
    "braincog==0.2.7.19" einops
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp "$here/original_stubs.py" "$site/original_stubs.py"
echo "import original_stubs" > "$site/original_stubs.pth"
"$venv/bin/python" -c "import snntorch, spikingjelly, braincog.base.node.node, snngen; print('ok')"
echo "originals environment ready: $venv/bin/python"
