// One node-opcua client session driven by a JSON plan (argv[2]); every output line is one JSON object.
//
// Plan: {endpoint, securityPolicy: "None" | "Basic256Sha256" | ..., securityMode: "None" | "Sign" | "SignAndEncrypt",
//        applicationUri, certificateFile, privateKeyFile, pkiDir, user: {name, password} | null,
//        pretendNoneEndpoint: true to send CreateSession over a None channel (see the function),
//        steps: [{op: "getEndpoints"} | {op: "browse", nodeId} | {op: "translate", start, path}
//                | {op: "read", nodeId, attribute?} | {op: "write", nodeId, dataType, value}
//                | {op: "subscribe", nodeId, until?, timeoutMs?}
//                | {op: "call", objectId, methodId, inputArguments: [{dataType, value}]}]}
// Lines: {"event": "connected"}, {"event": "session"}, {"event": "subscribed", nodeId} (the test may now change the
// value), and last {"done": true, "connected", "session", "error", "steps": [...]}. Errors are OPC UA status names.
"use strict";

const fs = require("fs");
const {
    AttributeIds,
    ClientMonitoredItem,
    ClientSubscription,
    DataType,
    EndpointDescription,
    MessageSecurityMode,
    OPCUACertificateManager,
    OPCUAClient,
    SecurityPolicy,
    TimestampsToReturn,
    UserTokenPolicy,
    UserTokenType,
    makeBrowsePath,
} = require("node-opcua");

const plan = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));

function emit(line) {
    process.stdout.write(JSON.stringify(line) + "\n");
}

function statusName(error) {
    const text = String(error && (error.message || error));
    const found = text.match(/Bad[A-Za-z]+/);
    return found ? found[0] : text.split("\n")[0];
}

function plain(value) {
    if (value === null || value === undefined) {
        return null;
    }
    if (typeof value === "bigint") {
        return value.toString();
    }
    if (Array.isArray(value) || ArrayBuffer.isView(value)) {
        return Array.from(value, plain);
    }
    if (typeof value === "object") {
        return value.toString();
    }
    return value;
}

function dataValue(value) {
    return {
        status: value.statusCode.name,
        value: value.value ? plain(value.value.value) : null,
        sourceTimestamp: value.sourceTimestamp ? value.sourceTimestamp.toISOString() : null,
    };
}

async function step(session, item) {
    switch (item.op) {
        case "browse": {
            const result = await session.browse(item.nodeId);
            return {
                status: result.statusCode.name,
                references: result.references.map((reference) => ({
                    browseName: reference.browseName.toString(),
                    nodeId: reference.nodeId.toString(),
                    displayName: reference.displayName.text,
                })),
            };
        }
        case "translate": {
            const result = await session.translateBrowsePath(makeBrowsePath(item.start, item.path));
            return {
                status: result.statusCode.name,
                targets: (result.targets || []).map((target) => target.targetId.toString()),
            };
        }
        case "read": {
            const attribute = AttributeIds[item.attribute || "Value"];
            return dataValue(await session.read({ nodeId: item.nodeId, attributeId: attribute }));
        }
        case "write": {
            const status = await session.write({
                nodeId: item.nodeId,
                attributeId: AttributeIds.Value,
                value: { value: { dataType: DataType[item.dataType], value: item.value } },
            });
            return { status: status.name };
        }
        case "call": {
            const result = await session.call({
                objectId: item.objectId,
                methodId: item.methodId,
                inputArguments: (item.inputArguments || []).map((argument) => ({
                    dataType: DataType[argument.dataType],
                    value: argument.value,
                })),
            });
            return {
                status: result.statusCode.name,
                outputs: (result.outputArguments || []).map((variant) => plain(variant.value)),
                diagnostics: (result.inputArgumentDiagnosticInfos || []).map((info) => (info ? info.additionalInfo : null)),
            };
        }
        case "subscribe":
            return await subscribe(session, item);
        default:
            throw new Error(`unknown step ${item.op}`);
    }
}

async function subscribe(session, item) {
    const subscription = ClientSubscription.create(session, {
        requestedPublishingInterval: 50,
        requestedLifetimeCount: 600,
        requestedMaxKeepAliveCount: 20,
        publishingEnabled: true,
    });
    const changes = [];
    try {
        const monitored = ClientMonitoredItem.create(
            subscription,
            { nodeId: item.nodeId, attributeId: AttributeIds.Value },
            { samplingInterval: 50, queueSize: 10, discardOldest: true },
            TimestampsToReturn.Both,
        );
        const arrived = new Promise((resolve, reject) => {
            const timer = setTimeout(() => resolve(false), item.timeoutMs || 5000);
            monitored.on("changed", (value) => {
                changes.push(dataValue(value));
                if (item.until === undefined || plain(value.value.value) === item.until) {
                    clearTimeout(timer);
                    resolve(true);
                }
            });
            monitored.on("err", (message) => {
                clearTimeout(timer);
                reject(new Error(message));
            });
        });
        await new Promise((resolve, reject) => {
            monitored.once("initialized", resolve);
            monitored.once("err", (message) => reject(new Error(message)));
        });
        emit({ event: "subscribed", nodeId: item.nodeId });
        const reached = await arrived;
        return { status: "Good", reached, changes };
    } finally {
        await subscription.terminate();
    }
}

// An attacker's client: believe the server offers a None endpoint (it does not), so that node-opcua sends
// CreateSession and ActivateSession (with the password in clear) over the None channel instead of refusing.
function pretendNoneEndpoint(client) {
    const offered = client._serverEndpoints[0];
    const pretended = new EndpointDescription({
        endpointUrl: offered.endpointUrl,
        server: offered.server,
        serverCertificate: offered.serverCertificate,
        securityMode: MessageSecurityMode.None,
        securityPolicyUri: SecurityPolicy.None,
        transportProfileUri: offered.transportProfileUri,
        securityLevel: 0,
        userIdentityTokens: [
            new UserTokenPolicy({ policyId: "anonymous", tokenType: UserTokenType.Anonymous }),
            new UserTokenPolicy({ policyId: "username", tokenType: UserTokenType.UserName, securityPolicyUri: null }),
        ],
    });
    client._serverEndpoints.push(pretended);
}

async function main() {
    const outcome = { done: true, connected: false, session: false, error: null, steps: [] };
    const certificateManager = new OPCUACertificateManager({
        rootFolder: plan.pkiDir,
        automaticallyAcceptUnknownCertificate: true,
    });
    const client = OPCUAClient.create({
        applicationName: "aas-server node-opcua test client",
        applicationUri: plan.applicationUri,
        clientCertificateManager: certificateManager,
        certificateFile: plan.certificateFile,
        privateKeyFile: plan.privateKeyFile,
        securityMode: MessageSecurityMode[plan.securityMode],
        securityPolicy: SecurityPolicy[plan.securityPolicy],
        endpointMustExist: false,
        connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
        requestedSessionTimeout: 60000,
    });
    try {
        await client.connect(plan.endpoint);
        outcome.connected = true;
        emit({ event: "connected" });
        const discovery = plan.steps.filter((item) => item.op === "getEndpoints");
        for (const item of discovery) {
            const endpoints = await client.getEndpoints();
            outcome.steps.push({
                op: item.op,
                endpoints: endpoints.map((endpoint) => [
                    endpoint.securityPolicyUri.split("#").pop(),
                    MessageSecurityMode[endpoint.securityMode],
                ]),
            });
        }
        if (plan.pretendNoneEndpoint) {
            pretendNoneEndpoint(client);
        }
        const identity = plan.user
            ? { type: UserTokenType.UserName, userName: plan.user.name, password: plan.user.password }
            : { type: UserTokenType.Anonymous };
        const session = await client.createSession(identity);
        outcome.session = true;
        emit({ event: "session" });
        try {
            for (const item of plan.steps.filter((each) => each.op !== "getEndpoints")) {
                try {
                    outcome.steps.push({ op: item.op, ...(await step(session, item)) });
                } catch (error) {
                    outcome.steps.push({ op: item.op, status: statusName(error) });
                }
            }
        } finally {
            await session.close();
        }
    } catch (error) {
        outcome.error = statusName(error);
    } finally {
        await client.disconnect();
        await certificateManager.dispose();
    }
    emit(outcome);
}

main().then(
    () => process.exit(0),
    (error) => {
        emit({ done: true, connected: false, session: false, error: statusName(error), steps: [] });
        process.exit(1);
    },
);
