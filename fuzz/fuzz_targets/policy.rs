//! Policy files: any text is read or refused with an error, and a policy
//! read answers any request, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qmp_proxy::PolicyFile;
use qmp_server::{QDict, QObject};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = PolicyFile::parse(text) else {
        return;
    };
    for name in [None, Some("read-only"), Some("p")] {
        let Ok(policy) = file.policy(name) else {
            continue;
        };
        let access = policy.commands_for(Some(1000));
        let mut hmp = QDict::new();
        hmp.insert("command-line", QObject::String(text.into()));
        let _ = access.refusal("human-monitor-command", &hmp);
        let _ = access.refusal(text, &QDict::new());
        let mut args = serde_json::json!({"a": {"b": text}});
        policy.redact(text, &mut args);
    }
});
