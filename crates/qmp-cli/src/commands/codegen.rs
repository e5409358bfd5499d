//! `qmp codegen --schema DUMP... -o FILE`: typed commands and events for a
//! QEMU build of one's own (another target, a patched QEMU), by the same
//! generator as the `qmp-types` crate.

use crate::cli::CodegenArgs;
use crate::Failure;

pub fn run(a: &CodegenArgs) -> Result<(), Failure> {
    let mut dumps = Vec::new();
    for path in &a.schemas {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Failure::Usage(format!("{} is not JSON: {e}", path.display())))?;
        let label = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        dumps.push((label, json));
    }
    let source = qmp_codegen::generate(&dumps)
        .map_err(|e| Failure::Usage(format!("not a query-qmp-schema dump: {e}")))?;
    std::fs::write(&a.output, source)
        .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", a.output.display())))
}
