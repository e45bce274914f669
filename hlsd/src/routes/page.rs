//! The operator web page and the answers that are not about media: `/` and `/static/<asset>`
//! (the files embedded by `crate::web`), the OPTIONS preflight for any path, and the JSON 404
//! for any request no route takes.

use std::convert::Infallible;

use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{get_or_head, request};
use crate::http::{self, Req};
use crate::web;

pub(super) fn routes() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let get = get_or_head();

    let index = warp::path::end()
        .and(get)
        .and(request())
        .map(|req: Req| web::index(&req));
    let assets = warp::path!("static" / String)
        .and(get)
        .and(request())
        .map(|name: String, req: Req| web::asset(&name, &req));
    let options = warp::options()
        .and(request())
        .map(|req: Req| http::preflight(&req));

    index.or(assets).unify().or(options).unify()
}

pub(super) fn fallback() -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    warp::any().and(warp::path::full()).and(warp::method()).map(
        |path: warp::path::FullPath, method: Method| {
            http::error(
                StatusCode::NOT_FOUND,
                format!("no route for {method} {}", path.as_str()),
            )
        },
    )
}
