//! A-ASSOCIATE negotiation as a pure function (PS3.8 sections 7.1 and 9.3.2-9.3.4).
//!
//! Owns: the decision to accept or reject an A-ASSOCIATE-RQ (with the PS3.8 result/source/reason
//! that says why), and the choice of one transfer syntax per presentation context by *our*
//! preference order. Must not: do IO, read the database (the caller passes the AE decision in).

use dicom_ul::pdu::{
    AssociationAC, AssociationRJ, AssociationRJResult, AssociationRJServiceProviderASCEReason, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, AssociationRQ, PresentationContextResult, PresentationContextResultReason, RequestorRoles,
    UserVariableItem,
};

use dicom_dictionary_std::uids;

use crate::dicom::part10::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
use crate::dicom::sop::{self, ServiceClass as Service, SopClass, TransferSyntax};
use crate::domain::{AeRole, AeTitle};

pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";

/// What the AE registry said about the calling AE title and the peer's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerDecision {
    /// Registered, enabled, and (where a host is bound) calling from that host, in this role: a
    /// modality may store into the pipeline, a PACS may report Storage Commitment results; both
    /// may verify (C-ECHO). An unregistered caller, where registration is not required, is a
    /// modality.
    Allowed(AeRole),
    /// Not registered, disabled, or calling from a host other than the one it is bound to.
    NotRecognized,
}

/// One SOP class a registered service serves, and on what terms: the services decide, the
/// negotiation only applies what they say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub class: &'static SopClass,
    /// The roles of calling AE that may use it (others get a user rejection of the context).
    pub roles: &'static [AeRole],
    /// The caller must propose to take the SCP role (PS3.7 D.3.3.4): a report the peer sends
    /// us as the SCP of a class we use as SCU (Storage Commitment results). Without it the
    /// caller asks us to be the SCP, which we are not: refused.
    pub caller_is_scp: bool,
    /// Only the native little endian syntaxes (small non-image data sets).
    pub native_only: bool,
}

pub struct AcceptorPolicy<'a> {
    pub ae_title: &'a AeTitle,
    /// The SOP classes the registered services serve, on their terms.
    pub offers: &'a [Offer],
    /// Transfer syntax UIDs, most preferred first.
    pub ts_preference: &'a [String],
    pub max_pdu_length: u32,
}

/// One accepted presentation context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedContext {
    pub id: u8,
    pub abstract_syntax: String,
    pub transfer_syntax: &'static TransferSyntax,
    pub service: Service,
    /// The caller took the SCP role of this class (a commitment report it sends us, the
    /// C-STORE sub-operations of its C-GET that we send it).
    pub caller_is_scp: bool,
}

#[derive(Debug, Clone)]
pub struct Negotiated {
    pub calling_ae: String,
    pub contexts: Vec<AcceptedContext>,
    /// The requestor's Maximum Length (0 = unlimited): the bound for PDUs we send.
    pub peer_max_pdu: u32,
    pub ac: AssociationAC,
}

pub fn reject(result: AssociationRJResult, source: AssociationRJSource) -> AssociationRJ {
    AssociationRJ { result, source }
}

/// The rejection sent when `max_associations` are already open.
pub fn local_limit_exceeded() -> AssociationRJ {
    reject(AssociationRJResult::Transient, AssociationRJSource::ServiceProviderPresentation(AssociationRJServiceProviderPresentationReason::LocalLimitExceeded))
}

pub fn negotiate(rq: &AssociationRQ, policy: &AcceptorPolicy<'_>, caller: CallerDecision) -> Result<Negotiated, AssociationRJ> {
    use AssociationRJResult::Permanent;
    if rq.protocol_version & 1 == 0 {
        return Err(reject(Permanent, AssociationRJSource::ServiceProviderASCE(AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported)));
    }
    if rq.application_context_name.trim_end_matches(['\0', ' ']) != APPLICATION_CONTEXT {
        return Err(reject(Permanent, AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::ApplicationContextNameNotSupported)));
    }
    if rq.called_ae_title.trim() != policy.ae_title.as_str() {
        return Err(reject(Permanent, AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::CalledAETitleNotRecognized)));
    }
    let role = match caller {
        CallerDecision::NotRecognized => {
            return Err(reject(Permanent, AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::CallingAETitleNotRecognized)))
        }
        CallerDecision::Allowed(role) => role,
    };
    // PS3.8 9.3.2.2: presentation context IDs are odd integers 1-255, each used once. A request
    // that breaks this cannot be answered context by context, so it is refused whole.
    let mut seen = [false; 256];
    for pc in &rq.presentation_contexts {
        if pc.id % 2 == 0 || std::mem::replace(&mut seen[usize::from(pc.id)], true) {
            return Err(reject(Permanent, AssociationRJSource::ServiceProviderASCE(AssociationRJServiceProviderASCEReason::NoReasonGiven)));
        }
    }

    // SOP classes for which the requestor proposes to take the SCP role (PS3.7 D.3.3.4).
    let scp_role_proposed: Vec<&str> = rq
        .user_variables
        .iter()
        .filter_map(|v| match v {
            UserVariableItem::ScuScpRoleSelectionSubItem(uid, roles) if roles.scp => Some(uid.trim_end_matches(['\0', ' '])),
            _ => None,
        })
        .collect();
    let mut results = Vec::with_capacity(rq.presentation_contexts.len());
    let mut contexts = Vec::new();
    for pc in &rq.presentation_contexts {
        let abstract_syntax = pc.abstract_syntax.trim_end_matches(['\0', ' ']);
        let offered: Vec<&str> = pc.transfer_syntaxes.iter().map(|t| t.trim_end_matches(['\0', ' '])).collect();
        // A class may be offered on several terms (a modality stores it; a PACS retrieving by
        // C-GET takes the SCP role of it): the caller's role and its role proposal pick one.
        let scp_proposed = scp_role_proposed.contains(&abstract_syntax);
        let mut candidates = policy.offers.iter().filter(|o| o.class.uid == abstract_syntax).peekable();
        let known = candidates.peek().is_some();
        let usable: Vec<&Offer> = candidates.filter(|o| o.roles.contains(&role) && (!o.caller_is_scp || scp_proposed)).collect();
        let pick = usable.iter().find(|o| o.caller_is_scp == scp_proposed).or(usable.first()).copied();
        let (reason, chosen) = match pick {
            None if !known => (PresentationContextResultReason::AbstractSyntaxNotSupported, None),
            // Roles: who may use a class is the serving service's rule (a modality stores, a
            // PACS reports commitment results and retrieves).
            None => (PresentationContextResultReason::UserRejection, None),
            Some(offer) => {
                let class = offer.class;
                let allowed = |uid: &str| !offer.native_only || uid == uids::EXPLICIT_VR_LITTLE_ENDIAN || uid == uids::IMPLICIT_VR_LITTLE_ENDIAN;
                let choice =
                    policy.ts_preference.iter().find(|pref| offered.contains(&pref.as_str()) && allowed(pref)).and_then(|uid| sop::transfer_syntax(uid));
                match choice {
                    Some(ts) => {
                        contexts.push(AcceptedContext {
                            id: pc.id,
                            abstract_syntax: abstract_syntax.to_string(),
                            transfer_syntax: ts,
                            service: class.service,
                            caller_is_scp: offer.caller_is_scp,
                        });
                        (PresentationContextResultReason::Acceptance, Some(ts.uid))
                    }
                    None => (PresentationContextResultReason::TransferSyntaxesNotSupported, None),
                }
            }
        };
        results.push(PresentationContextResult {
            id: pc.id,
            reason,
            // For a rejected context the value is not significant (PS3.8 9.3.3.2); echo an offer.
            transfer_syntax: chosen.map(str::to_string).or_else(|| offered.first().map(|s| s.to_string())).unwrap_or_default(),
        });
    }

    let peer_max_pdu = super::pdu::max_length(&rq.user_variables);
    // SCP/SCU role selection (PS3.7 D.3.3.4): a PACS sending Storage Commitment results asks to
    // be the SCP of the commitment SOP class on the association it opens; we accept exactly that
    // for the classes offered so (we stay the SCU) and ignore role proposals for anything else
    // (default roles).
    let mut user_variables = vec![
        UserVariableItem::MaxLength(policy.max_pdu_length),
        UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_string()),
        UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION_NAME.to_string()),
    ];
    // SOP Class Extended Negotiation (PS3.4 C.5): for a Query/Retrieve class, each option the
    // caller asks for (relational queries or retrieval, combined date-time matching, fuzzy
    // matching, time zone adjustment, ...) is answered 0: not supported. Other classes' items
    // are not answered (no extended negotiation).
    for v in &rq.user_variables {
        if let UserVariableItem::SopClassExtendedNegotiationSubItem(uid, info) = v {
            let uid = uid.trim_end_matches(['\0', ' ']);
            if contexts.iter().any(|c| c.abstract_syntax == uid && c.service == Service::QueryRetrieve) {
                user_variables.push(UserVariableItem::SopClassExtendedNegotiationSubItem(uid.to_string(), vec![0; info.len().min(8)]));
            }
        }
    }
    for uid in scp_role_proposed {
        if contexts.iter().any(|c| c.abstract_syntax == uid && c.caller_is_scp) {
            user_variables.push(UserVariableItem::ScuScpRoleSelectionSubItem(uid.to_string(), RequestorRoles { scu: false, scp: true }));
        }
    }

    let ac = AssociationAC {
        protocol_version: 1,
        calling_ae_title: rq.calling_ae_title.clone(),
        called_ae_title: rq.called_ae_title.clone(),
        application_context_name: APPLICATION_CONTEXT.to_string(),
        presentation_contexts: results,
        user_variables,
    };
    Ok(Negotiated { calling_ae: rq.calling_ae_title.trim().to_string(), contexts, peer_max_pdu, ac })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::PresentationContextProposed;

    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
    const IMPLICIT: &str = "1.2.840.10008.1.2";
    const EXPLICIT: &str = "1.2.840.10008.1.2.1";
    const J2K_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
    const J2K_LOSSY: &str = "1.2.840.10008.1.2.4.91";

    fn rq(called: &str, contexts: &[(&str, &[&str])]) -> AssociationRQ {
        AssociationRQ {
            protocol_version: 1,
            calling_ae_title: "CT1".into(),
            called_ae_title: called.into(),
            application_context_name: APPLICATION_CONTEXT.into(),
            presentation_contexts: contexts
                .iter()
                .enumerate()
                .map(|(i, (abs, ts))| PresentationContextProposed {
                    id: (2 * i + 1) as u8,
                    abstract_syntax: abs.to_string(),
                    transfer_syntaxes: ts.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
            user_variables: vec![UserVariableItem::MaxLength(16384)],
        }
    }

    fn prefs() -> Vec<String> {
        [J2K_LOSSLESS, EXPLICIT, IMPLICIT, J2K_LOSSY].iter().map(|s| s.to_string()).collect()
    }

    fn run(rq: &AssociationRQ, caller: CallerDecision) -> Result<Negotiated, AssociationRJ> {
        let ae = AeTitle::parse("TRIAGE").unwrap();
        let p = prefs();
        // The offers of the standard services (services::echo, store, commitment).
        let offers: Vec<Offer> = sop::SOP_CLASSES
            .iter()
            .flat_map(|class| match class.service {
                Service::Verification => vec![Offer { class, roles: &[AeRole::Modality, AeRole::Pacs], caller_is_scp: false, native_only: false }],
                Service::Storage => {
                    let get = Offer { class, roles: &[AeRole::Pacs], caller_is_scp: true, native_only: true };
                    let store = Offer { class, roles: &[AeRole::Modality], caller_is_scp: false, native_only: false };
                    let results = [uids::SECONDARY_CAPTURE_IMAGE_STORAGE, uids::COMPREHENSIVE3_DSR_STORAGE].contains(&class.uid);
                    match (class.ingested, results) {
                        (true, true) => vec![store, get],
                        (true, false) => vec![store],
                        _ => vec![get],
                    }
                }
                Service::Commitment => vec![Offer { class, roles: &[AeRole::Pacs], caller_is_scp: true, native_only: true }],
                Service::QueryRetrieve => vec![Offer { class, roles: &[AeRole::Pacs], caller_is_scp: false, native_only: true }],
                Service::ProcedureStep => vec![Offer { class, roles: &[AeRole::Modality], caller_is_scp: false, native_only: true }],
            })
            .collect();
        negotiate(rq, &AcceptorPolicy { ae_title: &ae, offers: &offers, ts_preference: &p, max_pdu_length: 65536 }, caller)
    }

    /// A caller asking for relational queries is told truthfully that they are not supported.
    #[test]
    fn extended_negotiation_for_query_classes_is_answered_not_supported() {
        let mut r = rq("TRIAGE", &[(sop::qr::STUDY_ROOT_FIND, &[EXPLICIT])]);
        r.user_variables.push(UserVariableItem::SopClassExtendedNegotiationSubItem(sop::qr::STUDY_ROOT_FIND.into(), vec![1, 1, 0]));
        r.user_variables.push(UserVariableItem::SopClassExtendedNegotiationSubItem(CT.into(), vec![1]));
        let n = run(&r, CallerDecision::Allowed(AeRole::Pacs)).unwrap();
        let ext: Vec<&UserVariableItem> =
            n.ac.user_variables.iter().filter(|v| matches!(v, UserVariableItem::SopClassExtendedNegotiationSubItem(..))).collect();
        assert_eq!(ext, [&UserVariableItem::SopClassExtendedNegotiationSubItem(sop::qr::STUDY_ROOT_FIND.into(), vec![0, 0, 0])]);
    }

    /// One class on two sets of terms: a modality stores Secondary Capture into the pipeline; a
    /// PACS retrieving by C-GET takes the SCP role of it and gets it accepted that way (and is
    /// told so), never as a sender; a modality cannot query.
    #[test]
    fn the_callers_role_and_role_proposal_pick_the_terms_of_a_class() {
        const SC: &str = "1.2.840.10008.5.1.4.1.1.7";
        let mut get = rq("TRIAGE", &[(SC, &[EXPLICIT]), (sop::qr::STUDY_ROOT_GET, &[EXPLICIT])]);
        get.user_variables.push(UserVariableItem::ScuScpRoleSelectionSubItem(SC.into(), RequestorRoles { scu: true, scp: true }));
        let n = run(&get, CallerDecision::Allowed(AeRole::Pacs)).unwrap();
        assert_eq!(n.contexts.len(), 2);
        assert!(n.contexts[0].caller_is_scp && !n.contexts[1].caller_is_scp);
        assert!(n.ac.user_variables.contains(&UserVariableItem::ScuScpRoleSelectionSubItem(SC.into(), RequestorRoles { scu: false, scp: true })));
        // The same request from a modality: Secondary Capture is accepted for storing (no role
        // reply: default roles), the GET class is refused.
        let n = run(&get, CallerDecision::Allowed(AeRole::Modality)).unwrap();
        assert_eq!(n.contexts.len(), 1);
        assert!(!n.contexts[0].caller_is_scp);
        assert!(!n.ac.user_variables.iter().any(|v| matches!(v, UserVariableItem::ScuScpRoleSelectionSubItem(..))));
        assert_eq!(n.ac.presentation_contexts[1].reason, PresentationContextResultReason::UserRejection);
        // A PACS proposing Secondary Capture without the SCP role wants to store: refused.
        let n = run(&rq("TRIAGE", &[(SC, &[EXPLICIT])]), CallerDecision::Allowed(AeRole::Pacs)).unwrap();
        assert_eq!(n.ac.presentation_contexts[0].reason, PresentationContextResultReason::UserRejection);
    }

    #[test]
    fn our_preference_wins_over_the_callers_order() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[IMPLICIT, EXPLICIT], Some(EXPLICIT)),
            (&[IMPLICIT, EXPLICIT, J2K_LOSSLESS], Some(J2K_LOSSLESS)),
            (&[J2K_LOSSY, IMPLICIT], Some(IMPLICIT)),
            (&[J2K_LOSSY], Some(J2K_LOSSY)),
            (&["1.2.840.10008.1.2.4.51"], None),
            (&[], None),
        ];
        for (offered, expected) in cases {
            let n = run(&rq("TRIAGE", &[(CT, offered)]), CallerDecision::Allowed(AeRole::Modality)).unwrap();
            assert_eq!(n.contexts.first().map(|c| c.transfer_syntax.uid), *expected, "offered {offered:?}");
            let reason = &n.ac.presentation_contexts[0].reason;
            let want =
                if expected.is_some() { PresentationContextResultReason::Acceptance } else { PresentationContextResultReason::TransferSyntaxesNotSupported };
            assert_eq!(reason, &want);
        }
    }

    #[test]
    fn a_pacs_reporting_commitment_gets_the_scp_role_and_a_native_syntax() {
        let mut r = rq("TRIAGE", &[(uids::STORAGE_COMMITMENT_PUSH_MODEL, &[J2K_LOSSLESS, IMPLICIT]), (CT, &[EXPLICIT])]);
        r.user_variables
            .push(UserVariableItem::ScuScpRoleSelectionSubItem(uids::STORAGE_COMMITMENT_PUSH_MODEL.into(), RequestorRoles { scu: false, scp: true }));
        r.user_variables.push(UserVariableItem::ScuScpRoleSelectionSubItem(CT.into(), RequestorRoles { scu: false, scp: true }));
        let n = run(&r, CallerDecision::Allowed(AeRole::Pacs)).unwrap();
        assert_eq!(n.contexts[0].transfer_syntax.uid, IMPLICIT, "never a compressed syntax for a commitment report");
        assert_eq!(n.contexts[0].service, Service::Commitment);
        let roles: Vec<&UserVariableItem> = n.ac.user_variables.iter().filter(|v| matches!(v, UserVariableItem::ScuScpRoleSelectionSubItem(..))).collect();
        assert_eq!(
            roles,
            [&UserVariableItem::ScuScpRoleSelectionSubItem(uids::STORAGE_COMMITMENT_PUSH_MODEL.into(), RequestorRoles { scu: false, scp: true })]
        );
        // Without the SCP role proposed, the caller wants us to commit: we do not offer that.
        let n = run(&rq("TRIAGE", &[(uids::STORAGE_COMMITMENT_PUSH_MODEL, &[IMPLICIT])]), CallerDecision::Allowed(AeRole::Pacs)).unwrap();
        assert!(n.contexts.is_empty());
        assert_eq!(n.ac.presentation_contexts[0].reason, PresentationContextResultReason::UserRejection);
    }

    /// A PACS may not store into the pipeline, a modality may not take the commitment SCP role;
    /// both may verify.
    #[test]
    fn each_role_gets_its_services_only() {
        let mut r = rq("TRIAGE", &[(CT, &[EXPLICIT]), (uids::STORAGE_COMMITMENT_PUSH_MODEL, &[IMPLICIT]), (uids::VERIFICATION, &[IMPLICIT])]);
        r.user_variables
            .push(UserVariableItem::ScuScpRoleSelectionSubItem(uids::STORAGE_COMMITMENT_PUSH_MODEL.into(), RequestorRoles { scu: false, scp: true }));
        let reasons = |role| run(&r, CallerDecision::Allowed(role)).unwrap().ac.presentation_contexts.iter().map(|c| c.reason.clone()).collect::<Vec<_>>();
        use PresentationContextResultReason::{Acceptance, UserRejection};
        assert_eq!(reasons(AeRole::Modality), [Acceptance, UserRejection, Acceptance]);
        assert_eq!(reasons(AeRole::Pacs), [UserRejection, Acceptance, Acceptance]);
    }

    /// PS3.8 9.3.2.2: even or repeated presentation context IDs refuse the association.
    #[test]
    fn even_or_repeated_context_ids_are_refused() {
        let asce = AssociationRJSource::ServiceProviderASCE(AssociationRJServiceProviderASCEReason::NoReasonGiven);
        let mut even = rq("TRIAGE", &[(CT, &[EXPLICIT])]);
        even.presentation_contexts[0].id = 2;
        assert_eq!(run(&even, CallerDecision::Allowed(AeRole::Modality)).unwrap_err().source, asce);
        let mut twice = rq("TRIAGE", &[(CT, &[EXPLICIT]), (CT, &[IMPLICIT])]);
        twice.presentation_contexts[1].id = 1;
        assert_eq!(run(&twice, CallerDecision::Allowed(AeRole::Modality)).unwrap_err().source, asce);
        assert!(run(&rq("TRIAGE", &[(CT, &[EXPLICIT]), (CT, &[IMPLICIT])]), CallerDecision::Allowed(AeRole::Modality)).is_ok());
    }

    #[test]
    fn unknown_abstract_syntax_is_rejected_per_context() {
        let n = run(&rq("TRIAGE", &[("1.2.3.4", &[EXPLICIT]), (CT, &[EXPLICIT])]), CallerDecision::Allowed(AeRole::Modality)).unwrap();
        assert_eq!(n.ac.presentation_contexts[0].reason, PresentationContextResultReason::AbstractSyntaxNotSupported);
        assert_eq!(n.ac.presentation_contexts[1].reason, PresentationContextResultReason::Acceptance);
        assert_eq!(n.contexts.len(), 1);
        assert_eq!(n.contexts[0].id, 3);
        assert_eq!(n.peer_max_pdu, 16384);
    }

    #[test]
    fn rejections_carry_the_ps38_reason() {
        use AssociationRJServiceUserReason as U;
        let check = |rq: AssociationRQ, caller, result: AssociationRJResult, source: AssociationRJSource| {
            let rj = run(&rq, caller).unwrap_err();
            assert_eq!((rj.result, rj.source), (result, source));
        };
        let ct = [(CT, &[EXPLICIT][..])];
        check(
            rq("OTHER", &ct),
            CallerDecision::Allowed(AeRole::Modality),
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceUser(U::CalledAETitleNotRecognized),
        );
        check(
            rq("TRIAGE", &ct),
            CallerDecision::NotRecognized,
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceUser(U::CallingAETitleNotRecognized),
        );
        let mut bad_ctx = rq("TRIAGE", &ct);
        bad_ctx.application_context_name = "1.2.3".into();
        check(
            bad_ctx,
            CallerDecision::Allowed(AeRole::Modality),
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceUser(U::ApplicationContextNameNotSupported),
        );
        let mut bad_version = rq("TRIAGE", &ct);
        bad_version.protocol_version = 2;
        check(
            bad_version,
            CallerDecision::Allowed(AeRole::Modality),
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceProviderASCE(AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported),
        );
        assert_eq!(
            local_limit_exceeded().source,
            AssociationRJSource::ServiceProviderPresentation(AssociationRJServiceProviderPresentationReason::LocalLimitExceeded)
        );
    }

    #[test]
    fn called_ae_title_padding_is_not_significant() {
        assert!(run(&rq("TRIAGE          ", &[(CT, &[EXPLICIT])]), CallerDecision::Allowed(AeRole::Modality)).is_ok());
    }
}
