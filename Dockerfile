# The signup image: the service installed with the locked dependencies, no build tools, run as
# a user without privileges. `docker compose` builds it (docker-compose.yml); alone:
#   docker build -t signup .
#   docker run --rm -e DATABASE_URL=... -e REDIS_URL=... -e SIGNUP_RESERVATION_KEY=... \
#     -e SIGNUP_EVENT_CIPHER_KEY=... -p 8000:8000 signup api --host 0.0.0.0
# The load generator (bench/) and the tests are not in it.

FROM python:3.11-slim AS build
# The uv that wrote uv.lock (the Makefile pins the same one).
RUN pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore uv==0.13.9
ENV UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/signup
WORKDIR /src
# The locked dependencies first, in a layer of their own: it is rebuilt only when they change.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project --python /usr/local/bin/python3.11
COPY domain ./domain
COPY application ./application
COPY projections ./projections
COPY infrastructure ./infrastructure
COPY interfaces ./interfaces
# --no-editable: the environment holds the service itself, not a pointer to /src.
RUN uv sync --frozen --no-dev --no-editable --python /usr/local/bin/python3.11 \
    && /opt/signup/bin/signup --help > /dev/null

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin signup
# Only the environment: the same Python at the same path as in the build stage.
COPY --from=build /opt/signup /opt/signup
ENV PATH=/opt/signup/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER signup
WORKDIR /tmp
EXPOSE 8000
ENTRYPOINT ["signup"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
