import { type ReceivedFd } from './index';
/**
 * Takes the descriptors passed to this process by socket activation, by name
 * (`FileDescriptorName=`, or `"unknown"` when the manager gave none; names
 * need not be unique, so each maps to a list in the order passed). Each is a
 * {@link ReceivedFd} owned here, with close-on-exec set, so this process's
 * own children do not inherit it; convert it (`listen(server)`,
 * `toServer()`, `toDgram()`) or close it.
 *
 * The variables are removed from the environment in every case, so children
 * do not take the descriptors for theirs. When they were meant for another
 * process (`LISTEN_PID` is not this one) or are absent, the map is empty.
 * Malformed variables throw `ERR_FDPASS_INVALID_ACTIVATION` and take nothing.
 */
export declare function listenFds(): Map<string, ReceivedFd[]>;
