//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/api/openapi.json`.

use crate::dto::*;
use crate::routes::firewall::{FirewallView, GroupsBody, PolicyBody, RuleBody};
use crate::routes::{
    agents, alerts, backup, commands, devices, enrollment, firewall, logs, password, public,
    session, settings, setup, tls, tokens, traffic,
};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Watchgrid", description = "Self-hosted WireGuard hub: setup, admin, enrollment and devices."),
    paths(
        public::healthz,
        setup::setup, crate::routes::restore::restore,
        session::login, session::logout, session::me, tokens::create, tokens::list,
        tokens::revoke, password::change, tls::show,
        session::totp_setup, session::totp_enable, session::totp_disable,
        enrollment::create, enrollment::list, enrollment::revoke, enrollment::register,
        agents::heartbeat, agents::wg_config,
        commands::queue, commands::list_for_device, commands::show, commands::cancel,
        commands::poll, commands::report,
        logs::ingest_lines, logs::ingest_logins, logs::search_lines, logs::search_logins,
        alerts::list, alerts::set_webhook, alerts::remove_webhook, alerts::show_settings,
        alerts::update_settings,
        devices::list, devices::create, devices::disable, devices::enable, devices::remove,
        devices::set_expiry, backup::download, backup::show, backup::set_schedule,
        backup::run_now, backup::verify, crate::routes::backup_offsite::show,
        crate::routes::backup_offsite::set, crate::routes::backup_offsite::remove,
        crate::routes::backup_offsite::test, crate::routes::backup_offsite::new_key,
        crate::routes::update::show, crate::routes::update::upload,
        crate::routes::ssh::show_ca, crate::routes::ssh::rotate, crate::routes::ssh::retire,
        crate::routes::ssh::sign_user, crate::routes::ssh::sign_host, crate::routes::ssh::list,
        crate::routes::ssh::revoke, crate::routes::ssh_agent::host_certs,
        devices::audit_log,
        firewall::show, firewall::update, firewall::set_groups,
        traffic::device_series, traffic::hub_series, traffic::monthly, traffic::show_quota,
        traffic::set_quota, traffic::remove_quota, settings::show, settings::update,
    ),
    components(schemas(
        ErrorBody, Status, Health, Username, ApiTokenCreated, ApiTokenView, ApiTokenList, TotpSetup, RecoveryCodes,
        EnrollmentTokenCreated, EnrollmentTokenView, EnrollmentTokenList, Registration,
        DeviceView, DeviceList, DeviceCreated, AuditView, AuditList,
        FirewallView, PolicyBody, RuleBody, GroupsBody,
        Heartbeat, HeartbeatAnswer, AgentConfig, AgentStatus,
        CommandView, CommandResultView, CommandList, CommandQueued, CommandOrder, CommandOrders,
        CommandErrorKind, CommandError, CommandReport, commands::QueueRequest,
        LoginOutcome, LoginEvent, LogBatch, LoginBatch, Acked, watchgrid_logstore::LogLine,
        watchgrid_logstore::StoredLine, logs::LogPageView, logs::LoginEventView,
        logs::LoginEventList, alerts::AlertView, alerts::AttemptView, alerts::AlertList,
        alerts::WebhookRequest, tls::TlsView, alerts::WebhookCreated, alerts::SettingsBody,
        traffic::Range, traffic::PointView, traffic::SeriesView, traffic::MonthlyRow,
        traffic::MonthlyView, traffic::QuotaBody, traffic::QuotaView, settings::ApplianceSettingsView,
        settings::EndpointBody, devices::ExpiryBody, backup::BackupRequest, crate::routes::restore::Restoring,
        backup::BackupsView, backup::ScheduleRequest, backup::BackupRun,
        crate::backups::StoredBackup, crate::backups::VerificationView, backup::OffsiteCopy,
        crate::routes::backup_offsite::OffsiteView, crate::routes::backup_offsite::OffsiteRequest,
        crate::routes::backup_offsite::OffsiteTest, crate::routes::backup_offsite::KeyRequest,
        crate::routes::update::UpdateView,
        crate::routes::ssh::CaKeyBody, crate::routes::ssh::CaView, crate::routes::ssh::RetireRequest,
        crate::routes::ssh::CertBody, crate::routes::ssh::CertIssued, crate::routes::ssh::CertView,
        crate::routes::ssh::CertList, crate::routes::ssh_agent::HostKeys,
        crate::dto::HostCerts, crate::dto::HostCert,
    )),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // Agents: `Authorization: Bearer <agent_key>` from their registration.
        components.add_security_scheme(
            "agent_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::SESSION_COOKIE,
            ))),
        );
    }
}

pub fn router() -> Router<crate::AppState> {
    Router::new().route(
        "/api/openapi.json",
        get(|| async { Json(ApiDoc::openapi()) }),
    )
}
