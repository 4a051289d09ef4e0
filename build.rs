//! Puts libtorch's folders on the binary's rpath, so it runs without LD_LIBRARY_PATH: the
//! wheel's `torch/lib`, and the `nvidia/*/lib` folders beside it (libtorch_cpu.so needs
//! libcudart and libcupti from there even on CPU). Also names the `onnxruntime/capi/` folder of
//! the same venv (`TRIAGE_ONNXRUNTIME_DIR`), where the node looks for ONNX Runtime by default.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Ok(libtorch) = std::env::var("LIBTORCH") else { return };
    let Ok(torch) = Path::new(&libtorch).canonicalize() else { return };
    if let Some(site) = torch.parent() {
        println!("cargo:rustc-env=TRIAGE_ONNXRUNTIME_DIR={}", site.join("onnxruntime").join("capi").display());
    }
    let mut dirs = vec![torch.join("lib")];
    if let Some(Ok(entries)) = torch.parent().map(|site| std::fs::read_dir(site.join("nvidia"))) {
        let mut nvidia: Vec<_> = entries.flatten().map(|e| e.path().join("lib")).filter(|p| p.is_dir()).collect();
        nvidia.sort();
        dirs.extend(nvidia);
    }
    for dir in dirs {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}
