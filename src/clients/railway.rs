//! Railway's public GraphQL API: one constant per query, a typed struct per answer.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::clients::http::{Http, Request, Retry};
use crate::redact::Secret;
use crate::settings::RailwayAuth;

const SERVICE: &str = "Railway API";

pub const PROJECT: &str = "query Project($id: String!) { project(id: $id) { id name services { edges { node { id name } } } } }";
/// The webapp's variables and, in the same request, its source and latest deployment's meta
/// (where its release is read from: `release::webapp_release`).
pub const WEBAPP: &str = "query Webapp($projectId: String!, $environmentId: String!, $serviceId: String!) { variables(projectId: $projectId, environmentId: $environmentId, serviceId: $serviceId) serviceInstance(environmentId: $environmentId, serviceId: $serviceId) { source { image repo } latestDeployment { meta } } }";
pub const DOMAINS: &str = "query Domains($environmentId: String!, $projectId: String!, $serviceId: String!) { domains(environmentId: $environmentId, projectId: $projectId, serviceId: $serviceId) { serviceDomains { domain } customDomains { domain } } }";
pub const DEPLOYMENTS: &str = "query Deployments($input: DeploymentListInput!, $first: Int) { deployments(input: $input, first: $first) { edges { node { id createdAt status } } } }";
pub const DEPLOYMENT: &str =
    "query Deployment($id: String!) { deployment(id: $id) { id createdAt status } }";
pub const DEPLOYMENT_LOGS: &str = "query DeploymentLogs($deploymentId: String!, $limit: Int, $filter: String) { deploymentLogs(deploymentId: $deploymentId, limit: $limit, filter: $filter) { timestamp message severity } }";
pub const ENVIRONMENT_LOGS: &str = "query EnvironmentLogs($environmentId: String!, $filter: String, $beforeLimit: Int) { environmentLogs(environmentId: $environmentId, filter: $filter, beforeLimit: $beforeLimit) { timestamp message severity } }";
pub const ME: &str = "query Me { me { id email } }";
pub const PROJECT_TOKEN: &str = "query ProjectToken { projectToken { projectId environmentId } }";
pub const DEPLOYMENT_RESTART: &str =
    "mutation DeploymentRestart($id: String!) { deploymentRestart(id: $id) }";

#[derive(Debug, Clone, Deserialize)]
pub struct Service {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: String,
    #[serde(default)]
    pub created_at: String,
    pub status: DeploymentStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStatus {
    Building,
    Crashed,
    Deploying,
    Failed,
    Initializing,
    NeedsApproval,
    Queued,
    Removed,
    Removing,
    Skipped,
    Sleeping,
    Success,
    Waiting,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogLine {
    #[serde(default)]
    pub timestamp: String,
    #[serde(default)]
    pub message: String,
}

/// `ServiceInstance { source { image repo } latestDeployment { meta } }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInstance {
    #[serde(default)]
    pub source: Option<ServiceSource>,
    #[serde(default)]
    pub latest_deployment: Option<DeploymentMeta>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServiceSource {
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub repo: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeploymentMeta {
    /// A JSON object (`DeploymentMeta` scalar): `branch`, `commitHash`, `image`, …
    #[serde(default)]
    pub meta: Option<Value>,
}

impl ServiceInstance {
    pub fn release(&self) -> crate::release::WebappRelease {
        let source = self.source.clone().unwrap_or_default();
        crate::release::webapp_release(
            source.image.as_deref(),
            source.repo.as_deref(),
            self.latest_deployment
                .as_ref()
                .and_then(|d| d.meta.as_ref()),
        )
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Domains {
    #[serde(default)]
    pub service_domains: Vec<Domain>,
    #[serde(default)]
    pub custom_domains: Vec<Domain>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Domain {
    pub domain: String,
}

impl Domains {
    /// A custom domain when there is one, else Railway's.
    pub fn public(&self) -> Option<&str> {
        self.custom_domains
            .iter()
            .chain(&self.service_domains)
            .map(|d| d.domain.as_str())
            .find(|d| !d.is_empty())
    }
}

#[derive(Deserialize)]
struct Envelope {
    data: Option<Value>,
    errors: Option<Vec<GraphqlError>>,
}

#[derive(Deserialize)]
struct GraphqlError {
    message: String,
}

#[derive(Deserialize)]
struct Edges<T> {
    edges: Vec<Node<T>>,
}

#[derive(Deserialize)]
struct Node<T> {
    node: T,
}

pub struct Railway<'a> {
    http: &'a Http,
    url: &'a str,
    auth: RailwayAuth,
    token: &'a Secret,
    pub deadline: Instant,
    /// Requests made, for the run's detail and the cost figures.
    pub requests: std::cell::Cell<u32>,
}

impl<'a> Railway<'a> {
    pub fn new(
        http: &'a Http,
        url: &'a str,
        auth: (RailwayAuth, &'a Secret),
        deadline: Instant,
    ) -> Self {
        Railway {
            http,
            url,
            auth: auth.0,
            token: auth.1,
            deadline,
            requests: std::cell::Cell::new(0),
        }
    }

    fn token_var(&self) -> &'static str {
        match self.auth {
            RailwayAuth::Account => "RAILWAY_API_TOKEN",
            RailwayAuth::Project => "RAILWAY_TOKEN",
        }
    }

    /// Runs one operation and returns its `data`.
    pub fn run<T: DeserializeOwned>(
        &self,
        query: &str,
        variables: Value,
        mutation: bool,
    ) -> anyhow::Result<T> {
        let mut req = Request::new(SERVICE, "POST", self.url)
            .json(&json!({ "query": query, "variables": variables }))
            .retry(if mutation {
                Retry::OnlyRateLimit
            } else {
                Retry::Idempotent
            });
        req = match self.auth {
            RailwayAuth::Account => {
                req.header("authorization", format!("Bearer {}", self.token.expose()))
            }
            RailwayAuth::Project => {
                req.header("project-access-token", self.token.expose().to_string())
            }
        };
        self.requests.set(self.requests.get() + 1);
        let resp = self.http.send(&req, self.deadline)?;
        let envelope: Envelope = match serde_json::from_str(&resp.body) {
            Ok(e) => e,
            Err(_) => bail!(
                "{SERVICE} answered HTTP {} with a body that is not JSON: {}",
                resp.status,
                resp.snippet()
            ),
        };
        if let Some(err) = envelope.errors.as_ref().and_then(|e| e.first()) {
            let msg = &err.message;
            let lower = msg.to_ascii_lowercase();
            if lower.contains("not authorized")
                || lower.contains("unauthorized")
                || lower.contains("token not found")
            {
                bail!(
                    "{} was rejected: {msg} (check the token, that it can see project RAILWAY_PROJECT_ID, and for a project token that RAILWAY_ENVIRONMENT_ID is its environment)",
                    self.token_var()
                );
            }
            bail!("{SERVICE}: {msg}");
        }
        if !resp.ok() {
            bail!(
                "{SERVICE} answered HTTP {}: {}",
                resp.status,
                resp.snippet()
            );
        }
        let data = envelope
            .data
            .ok_or_else(|| anyhow!("{SERVICE}: answer without data"))?;
        serde_json::from_value(data).with_context(|| format!("{SERVICE}: unexpected answer shape"))
    }

    /// Checks the token itself: who it belongs to (account) or which project (project token).
    pub fn whoami(&self) -> anyhow::Result<String> {
        match self.auth {
            RailwayAuth::Account => {
                let v: Value = self.run(ME, json!({}), false)?;
                Ok(format!(
                    "account {}",
                    v["me"]["email"].as_str().unwrap_or("?")
                ))
            }
            RailwayAuth::Project => {
                let v: Value = self.run(PROJECT_TOKEN, json!({}), false)?;
                Ok(format!(
                    "project token for {}",
                    v["projectToken"]["projectId"].as_str().unwrap_or("?")
                ))
            }
        }
    }

    pub fn services(&self, project_id: &str) -> anyhow::Result<Vec<Service>> {
        #[derive(Deserialize)]
        struct Data {
            project: Project,
        }
        #[derive(Deserialize)]
        struct Project {
            services: Edges<Service>,
        }
        let data: Data = self.run(PROJECT, json!({ "id": project_id }), false)?;
        Ok(data
            .project
            .services
            .edges
            .into_iter()
            .map(|e| e.node)
            .collect())
    }

    /// The webapp service's variables (nulls dropped) and its Railway source, in one request.
    pub fn webapp(
        &self,
        project_id: &str,
        environment_id: &str,
        service_id: &str,
    ) -> anyhow::Result<(BTreeMap<String, String>, ServiceInstance)> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Data {
            variables: BTreeMap<String, Option<String>>,
            #[serde(default)]
            service_instance: Option<ServiceInstance>,
        }
        let data: Data = self.run(
            WEBAPP,
            json!({ "projectId": project_id, "environmentId": environment_id, "serviceId": service_id }),
            false,
        )?;
        let vars = data
            .variables
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        Ok((vars, data.service_instance.unwrap_or_default()))
    }

    pub fn domains(
        &self,
        project_id: &str,
        environment_id: &str,
        service_id: &str,
    ) -> anyhow::Result<Domains> {
        #[derive(Deserialize)]
        struct Data {
            domains: Domains,
        }
        let data: Data = self.run(
            DOMAINS,
            json!({ "projectId": project_id, "environmentId": environment_id, "serviceId": service_id }),
            false,
        )?;
        Ok(data.domains)
    }

    /// Newest first.
    pub fn deployments(
        &self,
        project_id: &str,
        environment_id: &str,
        service_id: &str,
        first: u32,
    ) -> anyhow::Result<Vec<Deployment>> {
        #[derive(Deserialize)]
        struct Data {
            deployments: Edges<Deployment>,
        }
        let data: Data = self.run(
            DEPLOYMENTS,
            json!({ "input": { "projectId": project_id, "environmentId": environment_id, "serviceId": service_id }, "first": first }),
            false,
        )?;
        let mut list: Vec<Deployment> =
            data.deployments.edges.into_iter().map(|e| e.node).collect();
        list.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(list)
    }

    pub fn deployment(&self, id: &str) -> anyhow::Result<Deployment> {
        #[derive(Deserialize)]
        struct Data {
            deployment: Deployment,
        }
        let data: Data = self.run(DEPLOYMENT, json!({ "id": id }), false)?;
        Ok(data.deployment)
    }

    pub fn deployment_logs(
        &self,
        deployment_id: &str,
        limit: u32,
        filter: &str,
    ) -> anyhow::Result<Vec<LogLine>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Data {
            deployment_logs: Vec<LogLine>,
        }
        let data: Data = self.run(
            DEPLOYMENT_LOGS,
            json!({ "deploymentId": deployment_id, "limit": limit, "filter": filter }),
            false,
        )?;
        Ok(data.deployment_logs)
    }

    pub fn environment_logs(
        &self,
        environment_id: &str,
        filter: &str,
        before_limit: u32,
    ) -> anyhow::Result<Vec<LogLine>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Data {
            environment_logs: Vec<LogLine>,
        }
        let data: Data = self.run(
            ENVIRONMENT_LOGS,
            json!({ "environmentId": environment_id, "filter": filter, "beforeLimit": before_limit }),
            false,
        )?;
        Ok(data.environment_logs)
    }

    pub fn restart_deployment(&self, id: &str) -> anyhow::Result<bool> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Data {
            deployment_restart: bool,
        }
        let data: Data = self.run(DEPLOYMENT_RESTART, json!({ "id": id }), true)?;
        Ok(data.deployment_restart)
    }
}

/// Finds a service by the configured name, then by common names, case-insensitively. The
/// error lists the project's service names.
pub fn find_service<'s>(
    services: &'s [Service],
    configured: Option<&str>,
    var: &str,
    common: &[&str],
) -> anyhow::Result<&'s Service> {
    let wanted: Vec<&str> = configured
        .into_iter()
        .chain(common.iter().copied())
        .collect();
    for name in &wanted {
        if let Some(s) = services.iter().find(|s| s.name.eq_ignore_ascii_case(name)) {
            return Ok(s);
        }
    }
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    bail!(
        "no service named {} in the Railway project (its services: {}); set {var} to the right one",
        wanted
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(" or "),
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_services_case_insensitively_and_lists_names() {
        let services = vec![
            Service {
                id: "1".into(),
                name: "Trigger.dev".into(),
            },
            Service {
                id: "2".into(),
                name: "Redis".into(),
            },
        ];
        assert_eq!(
            find_service(&services, None, "WEBAPP_SERVICE_NAME", &["trigger.dev"])
                .unwrap()
                .id,
            "1"
        );
        let e = find_service(&services, Some("web"), "WEBAPP_SERVICE_NAME", &["webapp"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Trigger.dev, Redis") && e.contains("WEBAPP_SERVICE_NAME"),
            "{e}"
        );
    }

    #[test]
    fn unknown_deployment_status_is_tolerated() {
        let d: Deployment =
            serde_json::from_value(json!({"id": "d", "status": "HIBERNATING"})).unwrap();
        assert_eq!(d.status, DeploymentStatus::Unknown);
    }
}
