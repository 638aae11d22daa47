//! `GET /api/v1/admin/queues`: depth, consumers and rates of each queue of
//! the namespace, from the RabbitMQ management API.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::admin::error::AdminError;
use crate::admin::management::QueueStats;
use crate::admin::{Admin, admin_only};
use crate::identity::Caller;

#[derive(Debug, Serialize)]
struct QueuesBody<'a> {
    namespace: &'a str,
    items: Vec<QueueStats>,
}

pub async fn list(caller: Caller, admin: web::Data<Admin>) -> Result<HttpResponse, AdminError> {
    admin_only(&caller)?;
    let items = admin.management.queues().await?;
    Ok(HttpResponse::Ok().json(QueuesBody {
        namespace: admin.management.namespace(),
        items,
    }))
}
