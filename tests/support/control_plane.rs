//! A kube-apiserver and etcd of one test's own, on the stack's PKI, which the test may stop and start again
//! (the shared stack's control plane must stay up for the tests running beside it).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{stack, unique};

pub struct ControlPlane {
    dir: PathBuf,
    pki: PathBuf,
    etcd_port: u16,
    etcd_peer_port: u16,
    apiserver_port: u16,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    /// A kubeconfig for the admin, to hand to a controller (KUBECONFIG).
    pub kubeconfig: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn binary(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: dev/stack env exports it"))
}

impl ControlPlane {
    pub async fn start() -> Self {
        let stack_dir = PathBuf::from(stack().var("FC_STACK_DIR"));
        let dir = stack_dir.join("control-planes").join(unique("cp"));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = stack_dir.join("pki");
        let apiserver_port = free_port();
        let kubeconfig = dir.join("kubeconfig");
        let token = std::fs::read_to_string(pki.join("admin.token")).unwrap();
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: private\n  cluster:\n    server: https://127.0.0.1:{apiserver_port}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    token: {}\ncontexts:\n- name: private\n  context: {{cluster: private, user: admin, namespace: default}}\ncurrent-context: private\n",
                pki.join("ca.crt").display(),
                token.trim()
            ),
        )
        .unwrap();
        let mut plane = ControlPlane { dir, pki, etcd_port: free_port(), etcd_peer_port: free_port(), apiserver_port, etcd: None, apiserver: None, kubeconfig };
        plane.start_etcd().await;
        plane.start_apiserver().await;
        plane
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{name}.log"))).unwrap()
    }

    pub async fn start_etcd(&mut self) {
        let pki = &self.pki;
        let (client, peer) = (format!("https://127.0.0.1:{}", self.etcd_port), format!("http://127.0.0.1:{}", self.etcd_peer_port));
        let log = self.log("etcd");
        let child = Command::new(binary("FC_ETCD_BIN"))
            .args(["--name", "private", "--data-dir"])
            .arg(self.dir.join("etcd"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .arg(format!("--initial-cluster=private={peer}"))
            .arg("--cert-file").arg(pki.join("etcd.crt"))
            .arg("--key-file").arg(pki.join("etcd.key"))
            .arg("--client-cert-auth")
            .arg("--trusted-ca-file").arg(pki.join("ca.crt"))
            .args(["--listen-metrics-urls", &format!("http://127.0.0.1:{}", free_port()), "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.etcd = Some(child);
        self.wait_until(|| std::net::TcpStream::connect(("127.0.0.1", self.etcd_port)).is_ok(), "etcd listening").await;
    }

    pub async fn start_apiserver(&mut self) {
        let pki = &self.pki;
        let log = self.log("kube-apiserver");
        let child = Command::new(binary("FC_KUBE_APISERVER_BIN"))
            .args(["--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", &self.apiserver_port.to_string()])
            .arg(format!("--etcd-servers=https://127.0.0.1:{}", self.etcd_port))
            .arg("--etcd-cafile").arg(pki.join("ca.crt"))
            .arg("--etcd-certfile").arg(pki.join("apiserver.crt"))
            .arg("--etcd-keyfile").arg(pki.join("apiserver.key"))
            .arg("--tls-cert-file").arg(pki.join("apiserver.crt"))
            .arg("--tls-private-key-file").arg(pki.join("apiserver.key"))
            .arg("--client-ca-file").arg(pki.join("ca.crt"))
            .arg("--token-auth-file").arg(pki.join("tokens.csv"))
            .args(["--authorization-mode", "RBAC", "--service-account-issuer", "https://kubernetes.default.svc"])
            .arg("--service-account-key-file").arg(pki.join("sa.pub"))
            .arg("--service-account-signing-key-file").arg(pki.join("sa.key"))
            .args(["--api-audiences", "https://kubernetes.default.svc", "--service-cluster-ip-range", "10.96.0.0/16"])
            .arg("--cert-dir").arg(self.dir.join("apiserver-certs"))
            .args(["--v", "1"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kube-apiserver");
        self.apiserver = Some(child);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(client) = self.try_kube().await {
                // Ready when it serves and its bootstrap has made the default namespace.
                let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
                if namespaces.get_opt("default").await.is_ok_and(|n| n.is_some()) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the private kube-apiserver did not become ready; see {:?}", self.dir);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn wait_until(&self, ready: impl Fn() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready() {
            assert!(Instant::now() < deadline, "{what}: not within 60 s; see {:?}", self.dir);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, as when the process or its node dies.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn stop_etcd(&mut self) {
        if let Some(mut child) = self.etcd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn try_kube(&self) -> Result<kube::Client, kube::Error> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("kubeconfig");
        kube::Client::try_from(config)
    }

    pub async fn kube(&self) -> kube::Client {
        self.try_kube().await.expect("kube client")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop_apiserver();
        self.stop_etcd();
        let _ = std::fs::remove_dir_all(self.dir.join("etcd"));
    }
}
