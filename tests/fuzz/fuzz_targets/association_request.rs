//! A-ASSOCIATE-RQ (and any other control PDU) from arbitrary bytes, then negotiation with the
//! node's own offers and transfer syntax preference.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use triage_node::domain::{AeRole, AeTitle};
use triage_node::net::ul::negotiation::{self, AcceptorPolicy, CallerDecision, Offer};
use triage_node::net::ul::pdu;

include!("../common.rs");

struct Policy {
    ae: AeTitle,
    offers: Vec<Offer>,
    ts: Vec<String>,
}

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| {
        use triage_node::services::*;
        let offers = [echo::offers(), store::offers(), mpps::offers(), commitment::offers(), qr::offers()].concat();
        let ts = triage_node::config::Settings::load(None).unwrap().dicom.transfer_syntax_preference;
        Policy { ae: AeTitle::parse("TRIAGE").unwrap(), offers, ts }
    })
}

fuzz_target!(|data: &[u8]| {
    common::rt().block_on(async {
        let mut r = data;
        let Ok(Some(header)) = pdu::read_header(&mut r).await else { return };
        let Ok(pdu) = pdu::read_control_pdu(&mut r, header).await else { return };
        if let dicom_ul::pdu::Pdu::AssociationRQ(rq) = pdu {
            let p = policy();
            let policy = AcceptorPolicy { ae_title: &p.ae, offers: &p.offers, ts_preference: &p.ts, max_pdu_length: 262144 };
            for caller in [CallerDecision::Allowed(AeRole::Modality), CallerDecision::Allowed(AeRole::Pacs)] {
                if let Ok(n) = negotiation::negotiate(&rq, &policy, caller) {
                    // What we would answer encodes.
                    let _ = pdu::encode(&dicom_ul::pdu::Pdu::AssociationAC(n.ac));
                }
            }
        }
    })
});
