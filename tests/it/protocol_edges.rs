//! Protocol situations no well-behaved peer produces on purpose, driven with raw PDUs:
//! an abort in the middle of a data set, an oversized PDU, a release in the middle of a message.
//! None may leave a file or a row behind, and the node must keep serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;
use dicom_ul::pdu::{AbortRQSource, AssociationRQ, Pdu, PresentationContextProposed, UserVariableItem};
use triage_node::net::dimse::command::{field, tag, CommandSet};
use triage_node::net::ul::pdu::{encode, encode_pdata, encode_pdv};

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT: &str = "1.2.840.10008.1.2.1";

/// Associate as STORESCU with one CT context (id 1); returns the connected socket.
fn associate(port: u16) -> TcpStream {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let rq = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "STORESCU".into(),
        called_ae_title: "TRIAGE".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![PresentationContextProposed { id: 1, abstract_syntax: CT.into(), transfer_syntaxes: vec![EXPLICIT.into()] }],
        user_variables: vec![UserVariableItem::MaxLength(16384), UserVariableItem::ImplementationClassUID("1.2.3.4".into())],
    });
    sock.write_all(&encode(&rq)).unwrap();
    let mut header = [0u8; 6];
    sock.read_exact(&mut header).unwrap();
    assert_eq!(header[0], 0x02, "expected A-ASSOCIATE-AC");
    let len = u32::from_be_bytes(header[2..6].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    sock.read_exact(&mut body).unwrap();
    sock
}

/// Send a C-STORE-RQ command and the first half of a real CT data set.
fn start_store(sock: &mut TcpStream) {
    let file = testdata().unwrap().join("ts/ct_explicit_le.dcm");
    let (uid, _) = meta_of(&file);
    let mut cmd = CommandSet::default();
    cmd.set_uid(tag::AFFECTED_SOP_CLASS_UID, CT)
        .set_u16(tag::COMMAND_FIELD, field::C_STORE_RQ)
        .set_u16(tag::MESSAGE_ID, 1)
        .set_u16(tag::PRIORITY, 0)
        .set_u16(tag::COMMAND_DATA_SET_TYPE, 0x0000)
        .set_uid(tag::AFFECTED_SOP_INSTANCE_UID, &uid);
    sock.write_all(&encode_pdata(1, true, &cmd.encode(), 16384)).unwrap();
    let data = dataset_bytes(&file);
    // Half the data set, in fragments none of which is marked last.
    for piece in data[..data.len() / 2].chunks(16000) {
        sock.write_all(&encode_pdv(1, false, false, piece)).unwrap();
    }
}

fn assert_nothing_left(node: &Node) {
    assert!(node.wait_for_log("association ended", Duration::from_secs(10)), "{}", node.log());
    assert!(node.spool_files().is_empty(), "spool files left: {:?}", node.spool_files());
    assert!(node.stored_files().is_empty());
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(async { node.db().await.count_instances().await.unwrap() }), 0);
    // Still serving.
    assert_eq!(node.pynetdicom(&["echo"]), vec!["ESTABLISHED 1.2.840.10008.1.2.1", "ECHO 0x0000"]);
}

#[test]
fn abort_in_the_middle_of_a_data_set_leaves_nothing() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    let mut sock = associate(node.port);
    start_store(&mut sock);
    std::thread::sleep(Duration::from_millis(200));
    sock.write_all(&encode(&Pdu::AbortRQ { source: AbortRQSource::ServiceUser })).unwrap();
    drop(sock);
    assert!(node.wait_for_log("association aborted by peer", Duration::from_secs(10)), "{}", node.log());
    assert_nothing_left(&node);
}

#[test]
fn connection_lost_in_the_middle_of_a_data_set_leaves_nothing() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    let mut sock = associate(node.port);
    start_store(&mut sock);
    std::thread::sleep(Duration::from_millis(200));
    drop(sock);
    assert_nothing_left(&node);
}

#[test]
fn release_in_the_middle_of_a_message_drops_it() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions::default());
    let mut sock = associate(node.port);
    start_store(&mut sock);
    sock.write_all(&encode(&Pdu::ReleaseRQ)).unwrap();
    let mut rp = [0u8; 10];
    sock.read_exact(&mut rp).unwrap();
    assert_eq!(rp[0], 0x06, "expected A-RELEASE-RP");
    assert_nothing_left(&node);
}

#[test]
fn pdu_larger_than_our_maximum_is_aborted() {
    if !peers_ready() {
        return;
    }
    let node = Node::start(NodeOptions { dicom: vec!["max_pdu_length = 16384".into()], ..Default::default() });
    let mut sock = associate(node.port);
    // A P-DATA-TF header announcing 1 MiB.
    sock.write_all(&[0x04, 0, 0x00, 0x10, 0x00, 0x00]).unwrap();
    let mut reply = Vec::new();
    let _ = sock.read_to_end(&mut reply);
    assert_eq!(reply.first(), Some(&0x07), "expected A-ABORT, got {reply:?}");
    assert_eq!(reply.get(9), Some(&0x06), "reason should be invalid-PDU-parameter: {reply:?}");
    assert_nothing_left(&node);
}
