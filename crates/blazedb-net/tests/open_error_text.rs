//! A file that cannot be opened for a sync is named once in the error: the library's error
//! names it already, and the driver used to put "cannot open PATH: " before it again
//! ("cannot open b.db: cannot open b.db: no such database ...").

use blazedb::{Database, OpenOptions};
use blazedb_net::{sync_files_once, SyncFilesOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_error_names_the_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let encrypted = OpenOptions {
        password: Some("s3cret".into()),
        ..OpenOptions::default()
    };
    Database::open(&pb, encrypted).unwrap();
    Database::open(&pa, OpenOptions::default()).unwrap();

    let missing = dir.path().join("nope.db");
    let options = SyncFilesOptions {
        create_missing: false,
        ..SyncFilesOptions::default()
    };
    let e = sync_files_once(&pa, &missing, options).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "cannot open {}: no such database (create it by writing to it, or check the path)",
            missing.display()
        )
    );

    let wrong = SyncFilesOptions {
        password_b: Some(String::from("wrong").into()),
        ..SyncFilesOptions::default()
    };
    let e = sync_files_once(&pa, &pb, wrong).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "wrong password for {}: the file is encrypted with a different password (or, if \
             the password is right, its first page is damaged: restore it from a backup or a \
             peer)",
            pb.display()
        )
    );
}
