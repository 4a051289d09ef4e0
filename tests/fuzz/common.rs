// Shared by the fuzz targets (included with `include!`): a runtime for the async readers, the
// transfer syntaxes a peer may use, and the acceptor's policy as the node runs it.
#[allow(dead_code)]
mod common {
    use std::sync::OnceLock;

    use triage_node::dicom::sop::{self, TransferSyntax};

    pub fn rt() -> &'static tokio::runtime::Runtime {
        static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap())
    }

    /// The native transfer syntaxes, chosen by a byte of the input.
    pub fn syntax(selector: u8) -> &'static TransferSyntax {
        const UIDS: [&str; 3] = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"];
        sop::transfer_syntax(UIDS[usize::from(selector) % UIDS.len()]).unwrap()
    }
}
