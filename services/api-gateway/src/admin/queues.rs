//! `GET /api/v1/admin/queues`: depth, consumers and rates of each queue of
//! the namespace, from the RabbitMQ management API.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::admin::error::AdminError;
use crate::admin::management::QueueStats;
use crate::admin::{Admin, admin_only};
use crate::identity::Caller;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = QueueList)]
pub struct QueuesBody<'a> {
    /// `amqp.namespace`: every listed queue's name starts with it.
    namespace: &'a str,
    items: Vec<QueueStats>,
}

#[utoipa::path(get, path = "/api/v1/admin/queues", tag = "admin", operation_id = "list_queues",
    summary = "Depth, consumers and rates of each queue of the namespace (RabbitMQ's
management API; figures trail by its sampling interval, 5 s by default).",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The namespace's queues, by name", body = QueuesBody<'static>),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 403, description = "Not an admin", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The management API is unreachable", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
pub async fn list(caller: Caller, admin: web::Data<Admin>) -> Result<HttpResponse, AdminError> {
    admin_only(&caller)?;
    let items = admin.management.queues().await?;
    Ok(HttpResponse::Ok().json(QueuesBody {
        namespace: admin.management.namespace(),
        items,
    }))
}
